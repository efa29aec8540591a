// movierec front end: pick a user, search, rate with stars, watch the recommendations follow.
import { api, ApiError, getApiKey, setApiKey, itemsOf, normaliseMovie } from "./api.js";
import { createStars, setStarsValue } from "./stars.js";

const USER_STORAGE = "movierec.userId";
const NEW_USER_MIN = 100000;
const NEW_USER_MAX = 999999;
const REC_COUNT = 10;
const GENRES = [
  "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama", "Fantasy",
  "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
];

const $ = (selector) => document.querySelector(selector);

const state = {
  userId: null,
  /** movie_id -> {rating, movie} */
  ratings: new Map(),
  /** movie_id -> movie (everything we have seen, for titles of rated movies) */
  movies: new Map(),
  recsSeq: 0,
  searchSeq: 0,
  searchQuery: null,
  recsController: null,
};

// ---- messages -------------------------------------------------------------------------------

let statusTimer = null;
function announce(message) {
  const el = $("#status");
  el.textContent = message;
  clearTimeout(statusTimer);
  statusTimer = setTimeout(() => { if (el.textContent === message) el.textContent = ""; }, 8000);
}

function showAlert(message, { focusKey = false } = {}) {
  const el = $("#alert");
  el.textContent = message;
  el.hidden = !message;
  if (message) $("#status").textContent = "";
  if (focusKey) {
    $("#settings").open = true;
    $("#api-key").focus();
  }
}

function explain(err, action) {
  if (err instanceof ApiError) {
    if (err.status === 401 || err.status === 403) {
      const had = Boolean(getApiKey());
      showAlert(
        had
          ? `The server refused the API key (HTTP ${err.status}) while ${action}. Check the key under “API key”.`
          : `This server needs an API key to ${action}. Enter it under “API key” and try again.`,
        { focusKey: true },
      );
      return;
    }
    if (err.status === 503) {
      showAlert(`The service is not ready (no model published yet?) — ${err.message}`);
      return;
    }
    showAlert(`Could not ${action}: ${err.message}`);
    return;
  }
  if (err && err.name === "AbortError") return;
  showAlert(`Could not ${action}: ${err && err.message ? err.message : err}`);
}

// ---- user -----------------------------------------------------------------------------------

function remember(userId) {
  try {
    if (userId) localStorage.setItem(USER_STORAGE, String(userId));
    else localStorage.removeItem(USER_STORAGE);
  } catch { /* storage unavailable */ }
}

function initialUser() {
  const fromUrl = new URLSearchParams(window.location.search).get("user");
  if (fromUrl && /^\d+$/.test(fromUrl) && Number(fromUrl) > 0) return Number(fromUrl);
  try {
    const stored = localStorage.getItem(USER_STORAGE);
    if (stored && /^\d+$/.test(stored) && Number(stored) > 0) return Number(stored);
  } catch { /* ignore */ }
  return null;
}

function renderUser() {
  const el = $("#current-user");
  if (state.userId == null) {
    el.innerHTML = "";
    el.append("No user chosen yet — rating a movie starts you as a new user.");
  } else {
    el.innerHTML = "";
    el.append("Rating as user ");
    const strong = document.createElement("strong");
    strong.id = "current-user-id";
    strong.textContent = String(state.userId);
    el.append(strong);
  }
  $("#user-id").value = state.userId ?? "";
}

async function fetchRatings(userId) {
  try {
    return itemsOf(await api.userRatings(userId));
  } catch (err) {
    if (err instanceof ApiError && err.status === 404) return [];
    throw err;
  }
}

/** A random id in 100000..999999 that has no ratings yet (the API is asked, up to 10 tries). */
async function findNewUserId() {
  for (let attempt = 0; attempt < 10; attempt += 1) {
    const candidate = NEW_USER_MIN + Math.floor(Math.random() * (NEW_USER_MAX - NEW_USER_MIN + 1));
    const rows = await fetchRatings(candidate);
    if (rows.length === 0) return candidate;
  }
  throw new Error("no unused user id found after 10 tries");
}

async function switchUser(userId, { isNew = false } = {}) {
  showAlert("");
  state.userId = userId;
  state.ratings.clear();
  remember(userId);
  const url = new URL(window.location.href);
  url.searchParams.set("user", String(userId));
  window.history.replaceState(null, "", url);
  renderUser();
  if (!isNew) {
    try {
      const rows = await fetchRatings(userId);
      for (const raw of rows) {
        const movie = normaliseMovie(raw);
        if (!movie || movie.rating == null) continue;
        state.ratings.set(movie.movie_id, { rating: movie.rating, rated_at: movie.rated_at, movie: mergeMovie(movie) });
      }
      await fillTitles();
    } catch (err) {
      explain(err, "load this user's ratings");
    }
  }
  renderRated();
  syncAllStars();
  await refreshRecs();
  announce(isNew ? `You are new user ${userId}. Rate a few movies to get recommendations.`
    : `Showing user ${userId}: ${state.ratings.size} rating${state.ratings.size === 1 ? "" : "s"}.`);
}

async function startNewUser() {
  const button = $("#new-user");
  button.disabled = true;
  try {
    const id = await findNewUserId();
    await switchUser(id, { isNew: true });
    return id;
  } catch (err) {
    explain(err, "start a new user");
    return null;
  } finally {
    button.disabled = false;
  }
}

/** Remember what we know of a movie; keep the richer record. */
function mergeMovie(movie) {
  const known = state.movies.get(movie.movie_id);
  const merged = { ...(known || {}), ...Object.fromEntries(Object.entries(movie).filter(([, v]) => v != null)) };
  if (known && known.title && (!movie.title || movie.title === `Movie ${movie.movie_id}`)) merged.title = known.title;
  if (known && known.genres && known.genres.length && !(movie.genres && movie.genres.length)) {
    merged.genres = known.genres;
  }
  delete merged.rating;
  delete merged.score;
  delete merged.because;
  state.movies.set(movie.movie_id, merged);
  return merged;
}

/** Ratings may come without titles: look up the (most recent 40) missing ones. */
async function fillTitles() {
  const missing = [...state.ratings.values()]
    .filter((r) => !r.movie.title || r.movie.title === `Movie ${r.movie.movie_id}`)
    .sort((a, b) => (b.rated_at ?? 0) - (a.rated_at ?? 0))
    .slice(0, 40);
  const queue = [...missing];
  const worker = async () => {
    while (queue.length) {
      const entry = queue.shift();
      try {
        const movie = normaliseMovie(await api.movie(entry.movie.movie_id));
        if (movie) entry.movie = mergeMovie(movie);
      } catch { /* keep the id as the title */ }
    }
  };
  await Promise.all([worker(), worker(), worker(), worker()]);
}

// ---- rendering --------------------------------------------------------------------------------

function formatRating(value) {
  return Number.isInteger(value) ? String(value) : value.toFixed(1);
}

/** Below this many predicted stars a recommended movie gets a note on why it still ranks high. */
const MODEST_STARS = 3.5;

const STARS_HELP = "Predicted stars: the rating the model expects you would give this movie. The list is ranked "
  + "by how likely you are to watch and enjoy it, which also counts how widely a movie is watched, so the two "
  + "need not agree.";

/** "Because you rated X and Y": the ratings that raised this movie's score most (GET /recommend?explain=true). */
function renderBecause(node, because) {
  const slot = node.querySelector(".because");
  if (!because || !because.length) {
    slot.remove();
    return;
  }
  slot.textContent = "";
  slot.append("Because you rated ");
  because.forEach((reason, i) => {
    if (i > 0) slot.append(i === because.length - 1 ? " and " : ", ");
    const title = document.createElement("strong");
    title.textContent = reason.title;
    slot.append(title);
    // The user's own stars (from their ratings list): a low rating can be a reason too (disliking a
    // movie's opposite).
    const rating = state.ratings.get(reason.movie_id)?.rating;
    if (rating != null) {
      const stars = document.createElement("span");
      stars.className = "because-rating";
      stars.textContent = `(${formatRating(rating)}★)`;
      slot.append(" ", stars);
    }
  });
  slot.title = because.map((r) => `${r.title}: +${r.weight} to this movie's score`).join("\n");
  slot.dataset.movieIds = because.map((r) => r.movie_id).join(",");
}

function renderMovie(movie, { context, prediction = null, requestId = null } = {}) {
  const node = $("#movie-template").content.firstElementChild.cloneNode(true);
  node.dataset.movieId = String(movie.movie_id);
  node.querySelector(".title").textContent = movie.title;
  node.querySelector(".year").textContent = movie.year ? `(${movie.year})` : "";
  const genres = node.querySelector(".genres");
  for (const genre of movie.genres || []) {
    const li = document.createElement("li");
    li.textContent = genre;
    genres.append(li);
  }
  if (!(movie.genres || []).length) genres.remove();
  const pred = node.querySelector(".prediction");
  if (prediction != null && Number.isFinite(prediction)) {
    pred.innerHTML = "";
    pred.title = STARS_HELP;
    pred.append("Predicted stars ");
    const value = document.createElement("strong");
    value.className = "predicted-value";
    value.textContent = prediction.toFixed(1);
    pred.append(value, " / 5");
    const bar = document.createElement("span");
    bar.className = "pred-bar";
    bar.setAttribute("aria-hidden", "true");
    bar.style.setProperty("--fill", `${Math.max(0, Math.min(1, prediction / 5)) * 100}%`);
    pred.append(bar);
    if (context === "recs" && prediction < MODEST_STARS) {
      const hint = document.createElement("span");
      hint.className = "rank-hint";
      hint.textContent = "· ranked for how likely you are to watch it, not for the stars";
      pred.append(hint);
    }
  } else if (movie.count != null && typeof movie.count === "number") {
    pred.textContent = `Rated by ${movie.count.toLocaleString()} people`;
  } else {
    pred.remove();
  }
  renderBecause(node, context === "recs" ? movie.because : null);
  const current = state.ratings.get(movie.movie_id)?.rating ?? null;
  const stars = createStars({
    movieId: movie.movie_id,
    title: movie.title,
    value: current,
    onCommit: (value) => rate(movie, value),
  });
  node.querySelector(".stars-slot").replaceWith(stars);

  const more = node.querySelector(".more-btn");
  const panel = node.querySelector(".similar");
  const panelId = `similar-${context}-${movie.movie_id}`;
  panel.id = panelId;
  more.setAttribute("aria-controls", panelId);
  more.setAttribute("aria-label", `More like ${movie.title}`);
  more.addEventListener("click", () => {
    // Opening "More like this" on a recommendation is a click on it, for the online metrics.
    if (requestId && more.getAttribute("aria-expanded") !== "true") api.click(requestId, movie.movie_id);
    toggleSimilar(movie, more, panel);
  });
  return node;
}

async function toggleSimilar(movie, button, panel) {
  const open = button.getAttribute("aria-expanded") === "true";
  if (open) {
    button.setAttribute("aria-expanded", "false");
    panel.hidden = true;
    return;
  }
  button.setAttribute("aria-expanded", "true");
  panel.hidden = false;
  const heading = panel.querySelector(".similar-heading");
  const list = panel.querySelector(".similar-list");
  heading.textContent = `More like ${movie.title}`;
  if (list.childElementCount) return;
  list.innerHTML = '<li class="loading">Loading…</li>';
  try {
    const rows = itemsOf(await api.similar(movie.movie_id, 6)).map(normaliseMovie).filter(Boolean);
    list.innerHTML = "";
    if (!rows.length) list.innerHTML = '<li class="note">No similar movies found.</li>';
    for (const similar of rows) {
      const m = mergeMovie(similar);
      const li = document.createElement("li");
      li.className = "similar-item";
      li.dataset.movieId = String(m.movie_id);
      const title = document.createElement("span");
      title.className = "similar-title";
      title.textContent = `${m.title}${m.year ? ` (${m.year})` : ""}`;
      li.append(title);
      if (m.genres && m.genres.length) {
        const g = document.createElement("span");
        g.className = "similar-genres";
        g.textContent = m.genres.join(" · ");
        li.append(" ", g);
      }
      li.append(createStars({ movieId: m.movie_id, title: m.title, value: state.ratings.get(m.movie_id)?.rating ?? null,
        onCommit: (value) => rate(m, value), small: true }));
      list.append(li);
    }
  } catch (err) {
    list.innerHTML = "";
    const li = document.createElement("li");
    li.className = "note";
    li.textContent = err instanceof ApiError ? `Could not load similar movies: ${err.message}` : "Could not load similar movies.";
    list.append(li);
  }
}

function renderRated() {
  const list = $("#rated-list");
  list.innerHTML = "";
  const rows = [...state.ratings.values()].sort((a, b) => (b.rated_at ?? 0) - (a.rated_at ?? 0));
  $("#rated-count").textContent = rows.length ? `(${rows.length})` : "";
  $("#rated-empty").hidden = rows.length > 0;
  $("#rated-empty").textContent = state.userId == null ? "Nothing rated yet." : "This user has not rated anything yet.";
  for (const entry of rows.slice(0, 50)) {
    const movie = entry.movie;
    const li = document.createElement("li");
    li.className = "movie rated";
    li.dataset.movieId = String(movie.movie_id);
    const main = document.createElement("div");
    main.className = "movie-main";
    const h = document.createElement("h3");
    h.className = "movie-title";
    h.textContent = `${movie.title}${movie.year ? ` (${movie.year})` : ""}`;
    main.append(h);
    const actions = document.createElement("div");
    actions.className = "movie-actions";
    actions.append(createStars({ movieId: movie.movie_id, title: movie.title, value: entry.rating,
      onCommit: (value) => rate(movie, value), small: true }));
    const remove = document.createElement("button");
    remove.type = "button";
    remove.className = "btn btn-small btn-quiet remove-btn";
    remove.textContent = "Remove";
    remove.setAttribute("aria-label", `Remove your rating of ${movie.title}`);
    remove.addEventListener("click", () => unrate(movie));
    actions.append(remove);
    li.append(main, actions);
    list.append(li);
  }
  if (rows.length > 50) {
    const li = document.createElement("li");
    li.className = "note";
    li.textContent = `…and ${rows.length - 50} more.`;
    list.append(li);
  }
}

/** Every star widget on the page shows the current rating of its movie. */
function syncAllStars() {
  for (const widget of document.querySelectorAll("fieldset.stars")) {
    const id = Number(widget.dataset.movieId);
    setStarsValue(widget, state.ratings.get(id)?.rating ?? null);
  }
}

function setRecsHeader(personalized, modelVersion) {
  const heading = $("#recs-heading");
  const badge = $("#recs-badge");
  const note = $("#recs-note");
  if (personalized) {
    heading.textContent = "Recommended for you";
    badge.textContent = "personalized";
    badge.className = "badge badge-personal";
    note.textContent = "Movies you have not rated, ranked by how likely you are to watch and enjoy them. "
      + "Predicted stars are the rating the model expects you would give: a widely watched movie can rank "
      + "high with modest predicted stars.";
  } else {
    heading.textContent = "Popular movies";
    badge.textContent = "popular";
    badge.className = "badge badge-popular";
    note.textContent = state.userId == null
      ? "New here? These are the most popular movies. Rate a few and your own recommendations appear at once."
      : "Not personalized yet: rate a few movies and your recommendations appear here at once.";
  }
  $("#recs-filter").hidden = state.userId == null;
  const recs = $("#recs-section");
  recs.dataset.personalized = personalized ? "true" : "false";
  if (modelVersion != null) $("#footer-model").textContent = `model v${modelVersion}`;
}

async function refreshRecs() {
  const seq = ++state.recsSeq;
  if (state.recsController) state.recsController.abort();
  const controller = new AbortController();
  state.recsController = controller;
  const list = $("#recs-list");
  list.setAttribute("aria-busy", "true");
  const genre = $("#filter-genre").value || undefined;
  const minYear = $("#filter-year").value || undefined;
  try {
    let rows;
    let personalized = false;
    let modelVersion = null;
    let requestId = null;
    if (state.userId == null) {
      const data = await api.popular(REC_COUNT);
      rows = itemsOf(data);
      modelVersion = data && data.model_version;
    } else {
      const data = await api.recommend(state.userId, { n: REC_COUNT, genre, minYear }, controller.signal);
      rows = itemsOf(data);
      personalized = Boolean(data && data.personalized);
      modelVersion = data && data.model_version;
      requestId = data && data.request_id;
    }
    const movies = rows.map(normaliseMovie).filter(Boolean);
    let predictions = new Map();
    if (state.userId != null && movies.length) {
      try {
        const preds = await api.predictMany(movies.map((m) => ({ user_id: state.userId, movie_id: m.movie_id })));
        itemsOf(preds).forEach((p, i) => {
          const id = Number(p && p.movie_id != null ? p.movie_id : movies[i].movie_id);
          if (p && typeof p.rating === "number") predictions.set(id, p.rating);
        });
      } catch (err) {
        predictions = new Map();
        if (!(err instanceof ApiError)) throw err;
      }
    }
    if (seq !== state.recsSeq) return;
    // Re-rendering removes the element a keyboard user was on: keep their place at the heading.
    const hadFocus = list.contains(document.activeElement);
    list.innerHTML = "";
    for (const movie of movies) {
      const merged = { ...mergeMovie(movie), count: movie.count, because: movie.because };
      list.append(renderMovie(merged, { context: "recs", prediction: predictions.get(movie.movie_id) ?? null,
        requestId }));
    }
    if (!movies.length) {
      const li = document.createElement("li");
      li.className = "note";
      li.textContent = genre || minYear ? "Nothing matches these filters." : "No movies to show yet.";
      list.append(li);
    }
    setRecsHeader(personalized, modelVersion);
    if (hadFocus) $("#recs-heading").focus();
    $("#recs-meta").textContent = modelVersion != null ? `Model version ${modelVersion}` : "";
  } catch (err) {
    if (seq === state.recsSeq) explain(err, "load recommendations");
  } finally {
    if (seq === state.recsSeq) list.setAttribute("aria-busy", "false");
  }
}

// ---- rating ---------------------------------------------------------------------------------

async function rate(movie, value) {
  showAlert("");
  if (state.userId == null) {
    const id = await startNewUser();
    if (id == null) { syncAllStars(); return; }
  }
  const userId = state.userId;
  const previous = state.ratings.get(movie.movie_id);
  const merged = mergeMovie(movie);
  state.ratings.set(movie.movie_id, { rating: value, rated_at: Date.now() / 1000, movie: merged });
  syncAllStars();
  try {
    await api.rate(userId, movie.movie_id, value);
  } catch (err) {
    if (previous) state.ratings.set(movie.movie_id, previous);
    else state.ratings.delete(movie.movie_id);
    syncAllStars();
    explain(err, "save your rating");
    return;
  }
  if (userId !== state.userId) return;
  renderRated();
  announce(`Saved ${formatRating(value)} stars for ${merged.title}. Updating recommendations…`);
  await refreshRecs();
  announce(`Saved ${formatRating(value)} stars for ${merged.title}. Recommendations updated.`);
}

async function unrate(movie) {
  showAlert("");
  const userId = state.userId;
  if (userId == null) return;
  try {
    await api.deleteRating(userId, movie.movie_id);
  } catch (err) {
    if (!(err instanceof ApiError && err.status === 404)) {
      explain(err, "remove your rating");
      return;
    }
  }
  state.ratings.delete(movie.movie_id);
  renderRated();
  syncAllStars();
  announce(`Removed your rating of ${movie.title}.`);
  await refreshRecs();
}

// ---- search ---------------------------------------------------------------------------------

async function search(query) {
  // Typing and pressing Enter both search: the same query twice must not re-render the results
  // (that would pull the focus out of a star rating the person is using).
  if (query.trim() === state.searchQuery) return;
  state.searchQuery = query.trim();
  const seq = ++state.searchSeq;
  const list = $("#search-list");
  const meta = $("#search-meta");
  if (!query.trim()) {
    list.innerHTML = "";
    meta.textContent = "";
    return;
  }
  meta.textContent = "Searching…";
  try {
    const rows = itemsOf(await api.searchMovies(query.trim(), { limit: 12 })).map(normaliseMovie).filter(Boolean);
    if (seq !== state.searchSeq) return;
    list.innerHTML = "";
    for (const movie of rows) list.append(renderMovie(mergeMovie(movie), { context: "search" }));
    meta.textContent = rows.length
      ? `${rows.length} movie${rows.length === 1 ? "" : "s"} found for “${query.trim()}”. Click a star to rate.`
      : `No movies found for “${query.trim()}”.`;
  } catch (err) {
    if (seq !== state.searchSeq) return;
    state.searchQuery = null;
    meta.textContent = "";
    explain(err, "search movies");
  }
}

// ---- wiring ---------------------------------------------------------------------------------

function debounce(fn, ms) {
  let timer = null;
  const run = (...args) => {
    clearTimeout(timer);
    timer = setTimeout(() => fn(...args), ms);
  };
  run.cancel = () => clearTimeout(timer);
  return run;
}

function init() {
  const genreSelect = $("#filter-genre");
  for (const genre of GENRES) {
    const option = document.createElement("option");
    option.value = genre;
    option.textContent = genre;
    genreSelect.append(option);
  }

  $("#user-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const raw = $("#user-id").value.trim();
    if (!/^\d+$/.test(raw) || Number(raw) < 1) {
      showAlert("A user id is a positive whole number, e.g. 42.");
      $("#user-id").focus();
      return;
    }
    switchUser(Number(raw));
  });
  $("#new-user").addEventListener("click", () => startNewUser());

  $("#api-key").value = getApiKey();
  $("#key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    setApiKey($("#api-key").value.trim());
    showAlert("");
    announce($("#api-key").value.trim() ? "API key saved in this browser." : "API key cleared.");
  });
  $("#forget-key").addEventListener("click", () => {
    setApiKey("");
    $("#api-key").value = "";
    announce("API key cleared.");
  });

  const typed = debounce(() => search($("#search-input").value), 300);
  $("#search-form").addEventListener("submit", (event) => {
    event.preventDefault();
    typed.cancel();
    search($("#search-input").value);
  });
  $("#search-input").addEventListener("input", typed);

  const refilter = debounce(() => { if (state.userId != null) refreshRecs(); }, 300);
  $("#filter-genre").addEventListener("change", refilter);
  $("#filter-year").addEventListener("input", refilter);
  $("#recs-filter").addEventListener("submit", (event) => event.preventDefault());

  const initial = initialUser();
  if (initial != null) {
    switchUser(initial);
  } else {
    renderUser();
    renderRated();
    refreshRecs();
  }
  document.documentElement.dataset.ready = "true";
}

init();
