#!/usr/bin/env bash
# Fill docker/wheelhouse/ with every wheel the images install, downloaded here, where pip is set up
# to reach an index (and trusts whatever CA that takes). With wheels in it, the Dockerfile installs
# from it alone (`pip --no-index`): the image build then needs no network and no CA file, and none
# is baked into an image.
#
# What goes in: the CPU build of torch (TORCH_INDEX_URL, or wherever this host's pip finds
# torch==<pin>; on our machines a local file), the dependencies of movierec and of its `train`
# extra, the build backend, and recbole's wheel, which carries MovieLens 100K for `movierec data
# fetch ml-100k` in containers that cannot reach the internet. The wheels are for the images'
# Python (CPython 3.11, glibc Linux, this machine's architecture), whatever Python runs this.
#
#   scripts/docker/wheelhouse.sh          download what is missing (pip skips files it already has)
#   scripts/docker/wheelhouse.sh --clean  empty the wheelhouse (the build then uses the index again)
#
# Environment: PYTHON (an interpreter with pip, default python3), TORCH_INDEX_URL (e.g.
# https://download.pytorch.org/whl/cpu; default: pip's own configuration).
set -euo pipefail

cd "$(dirname "$0")/../.."
OUT=docker/wheelhouse
PY="${PYTHON:-python3}"
die() { echo "wheelhouse: $*" >&2; exit 1; }

if [ "${1:-}" = "--clean" ]; then
    find "$OUT" -maxdepth 1 -name '*.whl' -delete
    exit 0
fi
[ -z "${1:-}" ] || die "unknown option $1 (use --clean)"

arch="$(uname -m)"
# The images' platform: CPython 3.11 on glibc 2.36 (Debian bookworm) and every older manylinux tag.
target=(--only-binary=:all: --python-version 3.11 --implementation cp --abi cp311)
for minor in $(seq 36 -1 5); do
    target+=(--platform "manylinux_2_${minor}_${arch}")
done
target+=(--platform "manylinux2014_${arch}" --platform "manylinux2010_${arch}" --platform "manylinux1_${arch}")

reqs="$(mktemp -d)"
trap 'rm -rf "$reqs"' EXIT
# pyproject.toml -> torch's pin, and the other requirements of the images (build backend included).
"$PY" "$(dirname "$0")/requirements.py" "$reqs" || die "could not read the requirements from pyproject.toml"

pip=("$PY" -m pip download --disable-pip-version-check --progress-bar off --dest "$OUT" "${target[@]}")
echo "wheelhouse: downloading $(cat "$reqs/torch.txt") (CPU build) into $OUT"
"${pip[@]}" --no-deps ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} -r "$reqs/torch.txt" >/dev/null \
    || die "could not download $(cat "$reqs/torch.txt"); set TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu"
torch_wheel="$(ls "$OUT"/torch-"$(cat "$reqs/torch-version")"[+-]*.whl | head -1)"
echo "wheelhouse: downloading the other requirements and recbole==1.2.1 (MovieLens 100K)"
# The torch file itself as a requirement: pip resolves its dependencies without looking for another torch.
"${pip[@]}" -r "$reqs/requirements.txt" "$torch_wheel" >/dev/null || die "pip download failed"
"${pip[@]}" --no-deps "recbole==1.2.1" >/dev/null || die "could not download recbole==1.2.1"

# A CUDA torch pulls nvidia-* wheels (several GB): refuse it rather than ship it.
if ls "$OUT" | grep -q '^nvidia_'; then
    die "a CUDA build of torch got in (nvidia-* wheels); run --clean and set TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu"
fi
echo "wheelhouse: $(ls "$OUT"/*.whl | wc -l) wheels, $(du -sh "$OUT" | cut -f1)"
