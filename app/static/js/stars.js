// Accessible star rating: a fieldset of ten native radio inputs (0.5 ... 5 stars), each drawn
// as half a star. Keyboard: Tab into the group, arrow keys change the value, Enter or leaving
// the group saves it (arrowing does not fire a request per step). Mouse/touch: a click saves.

let counter = 0;
const VALUES = [0.5, 1, 1.5, 2, 2.5, 3, 3.5, 4, 4.5, 5];
const COMMIT_DELAY_MS = 900;

function fmt(value) {
  return Number.isInteger(value) ? String(value) : value.toFixed(1);
}

function label(value) {
  return `${fmt(value)} star${value === 1 ? "" : "s"}`;
}

function paint(fieldset, value) {
  for (const lab of fieldset.querySelectorAll("label.half")) {
    lab.classList.toggle("on", value != null && Number(lab.dataset.value) <= value);
  }
}

/** Show ``value`` (or nothing) without firing a save. */
export function setStarsValue(fieldset, value) {
  fieldset.dataset.value = value == null ? "" : String(value);
  for (const input of fieldset.querySelectorAll("input")) {
    input.checked = value != null && Number(input.value) === value;
  }
  paint(fieldset, value);
  const out = fieldset.querySelector(".stars-value");
  out.textContent = value == null ? "Not rated" : `${fmt(value)} ★`;
}

export function createStars({ movieId, title, value = null, onCommit, small = false }) {
  counter += 1;
  const name = `stars-${counter}`;
  const fieldset = document.createElement("fieldset");
  fieldset.className = small ? "stars stars-small" : "stars";
  fieldset.dataset.movieId = String(movieId);
  const legend = document.createElement("legend");
  legend.className = "visually-hidden";
  legend.textContent = `Your rating of ${title}`;
  fieldset.append(legend);

  const row = document.createElement("span");
  row.className = "stars-row";
  for (const v of VALUES) {
    const id = `${name}-${String(v).replace(".", "_")}`;
    const input = document.createElement("input");
    input.type = "radio";
    input.name = name;
    input.id = id;
    input.value = String(v);
    input.className = "star-input";
    const lab = document.createElement("label");
    lab.htmlFor = id;
    lab.className = `half ${Number.isInteger(v) ? "right" : "left"}`;
    lab.dataset.value = String(v);
    lab.title = label(v);
    const text = document.createElement("span");
    text.className = "visually-hidden";
    text.textContent = label(v);
    lab.append(text);
    row.append(input, lab);
  }
  fieldset.append(row);
  const out = document.createElement("output");
  out.className = "stars-value";
  out.setAttribute("aria-hidden", "true");
  fieldset.append(out);

  let pending = null;
  let timer = null;
  let pointer = false;
  const commit = () => {
    clearTimeout(timer);
    timer = null;
    if (pending == null) return;
    const chosen = pending;
    pending = null;
    if (String(chosen) === fieldset.dataset.value) return;
    onCommit(chosen);
  };

  fieldset.addEventListener("pointerdown", () => { pointer = true; });
  // A click on the star already chosen fires no change: forget the pointer so a later arrow key debounces.
  fieldset.addEventListener("click", () => { setTimeout(() => { pointer = false; }, 0); });
  fieldset.addEventListener("change", (event) => {
    const v = Number(event.target.value);
    paint(fieldset, v);
    out.textContent = `${fmt(v)} ★`;
    pending = v;
    if (pointer) {
      pointer = false;
      commit();
    } else {
      clearTimeout(timer);
      timer = setTimeout(commit, COMMIT_DELAY_MS);
    }
  });
  fieldset.addEventListener("keydown", (event) => {
    if (event.key === "Enter" || event.key === " ") {
      const focused = document.activeElement;
      if (!(focused instanceof HTMLInputElement) || !fieldset.contains(focused)) return;
      event.preventDefault();
      focused.checked = true;
      pending = Number(focused.value);
      paint(fieldset, pending);
      out.textContent = `${fmt(pending)} ★`;
      commit();
    }
  });
  fieldset.addEventListener("focusout", (event) => {
    if (!fieldset.contains(event.relatedTarget)) commit();
  });
  fieldset.addEventListener("pointerover", (event) => {
    const lab = event.target.closest("label.half");
    if (lab) paint(fieldset, Number(lab.dataset.value));
  });
  fieldset.addEventListener("pointerleave", () => {
    paint(fieldset, pending ?? (fieldset.dataset.value === "" ? null : Number(fieldset.dataset.value)));
  });

  setStarsValue(fieldset, value);
  return fieldset;
}
