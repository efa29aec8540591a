// Thin client for the movierec HTTP API (same origin). No dependencies.

const KEY_STORAGE = "movierec.apiKey";

export class ApiError extends Error {
  constructor(status, message, body) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.body = body;
  }
}

export function getApiKey() {
  try {
    return localStorage.getItem(KEY_STORAGE) || "";
  } catch {
    return "";
  }
}

export function setApiKey(key) {
  try {
    if (key) localStorage.setItem(KEY_STORAGE, key);
    else localStorage.removeItem(KEY_STORAGE);
  } catch {
    /* storage unavailable (private mode): the key lives for this page only */
  }
}

function detailMessage(body, status) {
  if (body && typeof body === "object") {
    const detail = body.detail ?? body.message ?? body.error;
    if (typeof detail === "string") return detail;
    if (Array.isArray(detail)) {
      return detail
        .map((d) => (d && typeof d === "object" ? `${(d.loc || []).slice(1).join(".")}: ${d.msg}` : String(d)))
        .join("; ");
    }
    if (detail && typeof detail === "object") return JSON.stringify(detail);
  }
  return `HTTP ${status}`;
}

export async function request(method, path, { query, body, signal } = {}) {
  // Relative to the page, so the UI also works when the API is mounted under a path prefix.
  const url = new URL(path, document.baseURI);
  if (query) {
    for (const [name, value] of Object.entries(query)) {
      if (value === undefined || value === null || value === "") continue;
      url.searchParams.set(name, Array.isArray(value) ? value.join(",") : String(value));
    }
  }
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const key = getApiKey();
  if (key && method !== "GET") headers["X-API-Key"] = key;
  let response;
  try {
    response = await fetch(url, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      signal,
    });
  } catch (err) {
    if (err.name === "AbortError") throw err;
    throw new ApiError(0, "The server cannot be reached. Is `make run` still running?", null);
  }
  const text = await response.text();
  let data = null;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = text;
    }
  }
  if (!response.ok) {
    throw new ApiError(response.status, detailMessage(data, response.status), data);
  }
  return data;
}

// ---- endpoint helpers --------------------------------------------------------------------

/** Normalise a genres field (list or "A|B|C" string) to an array of names. */
export function genresOf(value) {
  if (Array.isArray(value)) return value.map(String).filter(Boolean);
  if (typeof value === "string") return value.split(/[|,]/).map((g) => g.trim()).filter(Boolean);
  return [];
}

/** Pull the list of items out of a response that is a list or an object holding one. */
export function itemsOf(data) {
  if (Array.isArray(data)) return data;
  if (data && typeof data === "object") {
    for (const key of ["items", "ratings", "movies", "results", "similar", "data"]) {
      if (Array.isArray(data[key])) return data[key];
    }
  }
  return [];
}

/** A movie row in one shape whatever the endpoint: {movie_id, title, year, genres[], score?}. */
export function normaliseMovie(raw) {
  if (!raw || typeof raw !== "object") return null;
  const inner = raw.movie && typeof raw.movie === "object" ? raw.movie : {};
  const id = Number(raw.movie_id ?? raw.id ?? inner.movie_id ?? inner.id);
  if (!Number.isFinite(id)) return null;
  return {
    movie_id: id,
    title: raw.title ?? inner.title ?? `Movie ${id}`,
    year: raw.year ?? inner.year ?? null,
    genres: genresOf(raw.genres ?? inner.genres),
    score: typeof raw.score === "number" ? raw.score : typeof raw.similarity === "number" ? raw.similarity : null,
    rating: typeof raw.rating === "number" ? raw.rating : null,
    rated_at: raw.rated_at ?? null,
    count: raw.ratings_count ?? raw.count ?? raw.n_ratings ?? null,
    // explain=true: the user's rated movies that raised this one's score most, largest first.
    because: Array.isArray(raw.because) ? raw.because.filter((r) => r && r.title) : null,
  };
}

export const api = {
  recommend: (userId, { n = 10, genre, minYear, exclude, explain = true } = {}, signal) =>
    request("GET", "recommend", {
      query: { user_id: userId, n, genre, min_year: minYear, exclude, explain: explain ? "true" : undefined },
      signal,
    }),
  predictMany: (pairs) => request("POST", "predict", { body: pairs }),
  rate: (userId, movieId, rating) =>
    request("POST", "ratings", { body: { user_id: userId, movie_id: movieId, rating } }),
  userRatings: (userId) => request("GET", `users/${encodeURIComponent(userId)}/ratings`),
  deleteRating: (userId, movieId) =>
    request("DELETE", `users/${encodeURIComponent(userId)}/ratings/${encodeURIComponent(movieId)}`),
  searchMovies: (query, { genre, limit = 20, offset = 0 } = {}, signal) =>
    request("GET", "movies", { query: { query, genre, limit, offset }, signal }),
  movie: (movieId) => request("GET", `movies/${encodeURIComponent(movieId)}`),
  similar: (movieId, n = 6) => request("GET", `movies/${encodeURIComponent(movieId)}/similar`, { query: { n } }),
  popular: (n = 10) => request("GET", "popular", { query: { n } }),
  model: () => request("GET", "model"),
  /** A click on a recommended movie (POST /events); fire and forget: a failure is not the user's problem. */
  click: (requestId, movieId) =>
    request("POST", "events", { body: { request_id: requestId, movie_id: movieId, kind: "click" } }).catch(() => null),
};
