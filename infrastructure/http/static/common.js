/* TwinLedger dashboard: what every page shares.
 *
 * - Text from the API is put in the page with textContent only (never innerHTML): a name or a
 *   description can hold anything.
 * - Money arrives as integer GCC cents. Fields ending in _cents are parsed as BigInt from their
 *   source text (JSON.parse with source access), so amounts above 2^53 keep every cent, and are
 *   printed with integer arithmetic: never a float division.
 */
"use strict";

const TL = (() => {
  const API = "/api/v1";

  // --- exact money -------------------------------------------------------------------------

  function isCentsKey(key) {
    return typeof key === "string" && key.endsWith("_cents");
  }

  const INTEGER = /^-?\d+$/;

  function reviver(key, value, context) {
    if (typeof value !== "number") return value;
    const source = context && typeof context.source === "string" ? context.source : null;
    if (isCentsKey(key)) {
      if (source !== null && INTEGER.test(source)) return BigInt(source);
      if (Number.isSafeInteger(value)) return BigInt(value);
    }
    // Any other integer beyond 2^53 (a seed, a budget in a list) keeps its digits too.
    if (source !== null && !Number.isSafeInteger(value) && INTEGER.test(source)) {
      return BigInt(source);
    }
    return value;
  }

  /** JSON text -> value, with every *_cents integer as a BigInt. */
  function parseJSON(text) {
    return JSON.parse(text, reviver);
  }

  /** value -> JSON text, with BigInts written as exact integers. */
  function toJSON(value) {
    return JSON.stringify(value, (key, item) => {
      if (typeof item !== "bigint") return item;
      if (typeof JSON.rawJSON === "function") return JSON.rawJSON(item.toString());
      const number = Number(item);
      if (!Number.isSafeInteger(number)) throw new Error(`${key}: too large for this browser`);
      return number;
    });
  }

  function toBigInt(cents) {
    if (typeof cents === "bigint") return cents;
    if (typeof cents === "number" && Number.isInteger(cents)) return BigInt(cents);
    if (typeof cents === "string" && /^-?\d+$/.test(cents)) return BigInt(cents);
    return null;
  }

  function groupThousands(digits) {
    let out = "";
    for (let i = 0; i < digits.length; i++) {
      if (i > 0 && (digits.length - i) % 3 === 0) out += ",";
      out += digits[i];
    }
    return out;
  }

  /** Integer cents -> "GCC 1,234.05" (or "-GCC 3.10"), exact. */
  function money(cents) {
    const value = toBigInt(cents);
    if (value === null) return "-";
    const negative = value < 0n;
    const digits = (negative ? -value : value).toString().padStart(3, "0");
    const whole = digits.slice(0, -2);
    const fraction = digits.slice(-2);
    return `${negative ? "-" : ""}GCC ${groupThousands(whole)}.${fraction}`;
  }

  /** Short label for an axis tick (a position on the axis, not an amount shown as such). */
  function moneyTick(centsNumber) {
    const value = BigInt(Math.round(centsNumber));
    const negative = value < 0n;
    const units = (negative ? -value : value) / 100n;
    const steps = [
      [1000000000000n, "T"],
      [1000000000n, "B"],
      [1000000n, "M"],
      [1000n, "k"],
    ];
    if (units < 1000n) {
      // small amounts: whole cents (a tick may fall between two cents; it is rounded)
      const cents = (negative ? -value : value) % 100n;
      return `${negative ? "-" : ""}${units}.${cents.toString().padStart(2, "0")}`;
    }
    let text = units.toString();
    for (const [size, suffix] of steps) {
      if (units >= size) {
        const tenths = (units * 10n) / size;
        const whole = tenths / 10n;
        const rest = tenths % 10n;
        text = `${whole}${rest === 0n ? "" : "." + rest}${suffix}`;
        break;
      }
    }
    return `${negative ? "-" : ""}${text}`;
  }

  /** "1,000,000.50" GCC -> 100000050n cents; throws naming the field on anything else. */
  function parseMoney(text, field) {
    const cleaned = String(text).replace(/[\s,_]/g, "");
    const match = /^(\d+)(?:\.(\d{1,2}))?$/.exec(cleaned);
    if (!match) throw new Error(`${field}: write an amount in GCC like 1000000 or 2500.50`);
    return BigInt(match[1]) * 100n + BigInt((match[2] || "").padEnd(2, "0"));
  }

  // --- the JSON API ------------------------------------------------------------------------

  function token() {
    return sessionStorage.getItem("twinledger-token") || "";
  }

  function describeError(status, body) {
    if (body && body.detail !== undefined) {
      const detail = body.detail;
      if (typeof detail === "string") return detail;
      if (Array.isArray(detail)) {
        return detail
          .map((item) => {
            const where = Array.isArray(item.loc) ? item.loc.filter((p) => p !== "body") : [];
            return `${where.join(".")}${where.length ? ": " : ""}${item.msg || ""}`;
          })
          .join("; ");
      }
      if (typeof detail === "object" && detail) {
        const field = detail.field ? `${detail.field}: ` : "";
        return field + (detail.message || detail.msg || JSON.stringify(detail));
      }
    }
    if (body && (body.message || body.error)) {
      const field = body.field ? `${body.field}: ` : "";
      return field + (body.message || body.error);
    }
    return `HTTP ${status}`;
  }

  class ApiError extends Error {
    constructor(status, message, body) {
      super(message);
      this.status = status;
      this.body = body;
    }
  }

  /** Calls the API; returns {status, body, headers}; throws ApiError on 4xx/5xx. */
  async function request(method, path, body) {
    const headers = { Accept: "application/json" };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    if (method !== "GET" && token()) headers.Authorization = `Bearer ${token()}`;
    const response = await fetch(API + path, {
      method,
      headers,
      body: body === undefined ? undefined : toJSON(body),
    });
    const text = await response.text();
    let parsed = null;
    if (text) {
      try {
        parsed = parseJSON(text);
      } catch (error) {
        parsed = { message: text.slice(0, 200) };
      }
    }
    if (!response.ok) {
      throw new ApiError(response.status, describeError(response.status, parsed), parsed);
    }
    return { status: response.status, body: parsed, headers: response.headers };
  }

  async function get(path) {
    return (await request("GET", path)).body;
  }

  /** A list response, whatever its envelope: [..] or {items|runs|twins|...: [..]}. */
  function items(body) {
    if (Array.isArray(body)) return body;
    if (!body || typeof body !== "object") return [];
    for (const key of ["items", "data", "results", "runs", "twins", "experiments", "projections"]) {
      if (Array.isArray(body[key])) return body[key];
    }
    return [];
  }

  function q(params) {
    const search = new URLSearchParams();
    for (const [key, value] of Object.entries(params)) {
      if (value !== undefined && value !== null && value !== "") search.set(key, String(value));
    }
    const text = search.toString();
    return text ? `?${text}` : "";
  }

  /** The last path segment of this page's address (the id of /runs/{id} etc.). */
  function pageId() {
    const parts = location.pathname.split("/").filter(Boolean);
    return decodeURIComponent(parts[parts.length - 1] || "");
  }

  // --- DOM, text only -----------------------------------------------------------------------

  /** el("a", {href: "/x", class: "y"}, "text", child): children are strings (as text) or nodes. */
  function el(tag, attributes, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attributes || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (key === "class") node.className = value;
      else if (key.startsWith("on") && typeof value === "function") {
        node.addEventListener(key.slice(2), value);
      } else node.setAttribute(key, value === true ? "" : String(value));
    }
    append(node, children);
    return node;
  }

  function append(node, children) {
    for (const child of children.flat()) {
      if (child === undefined || child === null || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function clear(node) {
    node.replaceChildren();
    return node;
  }

  const link = {
    twin: (id) => `/twins/${encodeURIComponent(id)}`,
    run: (id) => `/runs/${encodeURIComponent(id)}`,
    experiment: (id) => `/experiments/${encodeURIComponent(id)}`,
    compare: (ids) => `/compare?runs=${ids.map(encodeURIComponent).join(",")}`,
  };

  function shortId(id) {
    return id ? String(id).slice(0, 8) : "-";
  }

  function idLink(kind, id) {
    if (!id) return "-";
    return el("a", { href: link[kind](id), class: "id", title: String(id) }, shortId(id));
  }

  function when(text) {
    if (!text) return "-";
    const moment = new Date(text);
    if (Number.isNaN(moment.getTime())) return String(text);
    return el("span", { class: "when", title: String(text) },
      moment.toISOString().replace("T", " ").slice(0, 16) + " UTC");
  }

  function number(value, digits = 3) {
    if (value === null || value === undefined) return "-";
    if (typeof value === "bigint") return value.toString();
    if (typeof value !== "number") return String(value);
    if (Number.isInteger(value)) return value.toLocaleString("en-US");
    return value.toLocaleString("en-US", { maximumFractionDigits: digits });
  }

  /** A value as text: money for *_cents keys, numbers rounded, objects as compact JSON. */
  function show(key, value) {
    if (value === null || value === undefined) return "-";
    if (isCentsKey(key)) return money(value);
    if (typeof value === "number" || typeof value === "bigint") return number(value, 6);
    if (typeof value === "object") return toJSON(value);
    return String(value);
  }

  function statusBadge(status) {
    return el("span", { class: `badge status-${String(status || "unknown").replace(/\W/g, "")}` },
      status || "unknown");
  }

  /** A table: columns are [heading, (row) => text or node]. */
  function table(rows, columns, options = {}) {
    const head = el("tr", {}, columns.map(([heading]) => el("th", {}, heading)));
    const body = rows.map((row) =>
      el("tr", options.rowAttributes ? options.rowAttributes(row) : {},
        columns.map(([, cell]) => {
          const value = cell(row);
          return el("td", {}, value === undefined || value === null ? "-" : value);
        })),
    );
    const empty = rows.length
      ? null
      : el("tr", {}, el("td", { colspan: columns.length, class: "empty" }, options.empty || "none"));
    return el("table", { class: options.class || "grid" }, el("thead", {}, head),
      el("tbody", {}, body, empty));
  }

  /** A definition list of an object's fields (keys as given, values shown as text). */
  function fields(object, keys) {
    const list = el("dl", { class: "fields" });
    for (const key of keys || Object.keys(object || {})) {
      if (!object || !(key in object)) continue;
      const value = object[key];
      const shown = key.endsWith("_at") && typeof value === "string" ? when(value) : show(key, value);
      list.append(el("dt", {}, key), el("dd", {}, shown));
    }
    return list;
  }

  function showError(where, error) {
    const message = error instanceof Error ? error.message : String(error);
    const box = el("p", { class: "error", role: "alert" }, message);
    clear(where).append(box);
    return box;
  }

  function header(active) {
    const nav = el("nav", { class: "top" },
      el("a", { href: "/", class: "brand" }, "TwinLedger"),
      el("a", { href: "/", class: active === "overview" ? "active" : "" }, "Overview"),
      el("a", { href: "/api/v1/docs", class: "muted" }, "API"),
    );
    document.body.prepend(nav);
  }

  // --- the run form (overview and twin pages) ------------------------------------------------

  const PATTERNS = ["mars_terraform", "venus_industrial", "titan_fuel", "europa_ocean"];

  /** The run form, or why there is none (a read-only server: GET /health says so). */
  async function runFormOrWhy(twins, chosenTwin) {
    let health = null;
    try {
      health = await get("/health");
    } catch (error) {
      // the form still works or says why not
    }
    if (health && health.read_only) {
      return el("p", { class: "muted", id: "read-only" },
        "This server is read-only (twinledger serve --read-only): runs are started elsewhere.");
    }
    return runForm(twins, chosenTwin);
  }

  /** A form that queues a run (POST /runs) and opens its page. ``twins``: [{id, name}]. */
  function runForm(twins, chosenTwin) {
    const status = el("p", { class: "form-status", "aria-live": "polite" });
    const twinSelect = el("select", { name: "twin_id", id: "run-twin", required: true },
      twins.map((twin) => el("option", { value: twin.id, selected: twin.id === chosenTwin },
        `${twin.name || "twin"} (${shortId(twin.id)})`)));
    const patternSelect = el("select", { name: "pattern", id: "run-pattern" },
      PATTERNS.map((p) => el("option", { value: p }, p)));
    const years = el("input", { name: "years", id: "run-years", type: "number", min: 1,
      max: 1000, value: 100, required: true });
    const seed = el("input", { name: "seed", id: "run-seed", type: "number", min: 0,
      placeholder: "random" });
    const budget = el("input", { name: "budget", id: "run-budget", inputmode: "decimal",
      value: "10,000,000,000.00", required: true });
    const tech = el("input", { name: "tech_level", id: "run-tech", type: "number", min: 1,
      max: 10, value: 5 });
    const priority = el("select", { name: "priority", id: "run-priority" },
      ["normal", "low", "high"].map((p) => el("option", { value: p }, p)));
    const tokenInput = el("input", { name: "token", id: "run-token", type: "password",
      autocomplete: "off", placeholder: "only if the server asks", value: token() });
    const submit = el("button", { type: "submit", id: "run-submit" }, "Start run");
    const label = (text, input) => el("label", {}, el("span", {}, text), input);
    const form = el("form", { class: "run-form", id: "run-form" },
      label("Twin", twinSelect), label("Pattern", patternSelect), label("Years", years),
      label("Seed", seed), label("Budget (GCC)", budget), label("Tech level", tech),
      label("Priority", priority), label("API token", tokenInput), submit, status);
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      status.className = "form-status";
      try {
        if (tokenInput.value) sessionStorage.setItem("twinledger-token", tokenInput.value);
        else sessionStorage.removeItem("twinledger-token");
        const body = {
          twin_id: twinSelect.value,
          pattern: patternSelect.value,
          years: Number(years.value),
          budget_cents: parseMoney(budget.value, "budget"),
          tech_level: Number(tech.value),
          priority: priority.value,
        };
        if (seed.value !== "") {
          if (!/^\d+$/.test(seed.value.trim())) throw new Error("seed: a whole number, 0 or more");
          body.seed = BigInt(seed.value.trim());
        }
        submit.disabled = true;
        status.textContent = "queueing...";
        const answer = await request("POST", "/runs", body);
        const location_ = answer.headers.get("Location");
        const id = (answer.body && (answer.body.id || answer.body.run_id)) ||
          (location_ ? location_.split("/").filter(Boolean).pop() : null);
        status.textContent = "queued";
        if (id) window.location.assign(link.run(id));
      } catch (error) {
        status.className = "form-status error";
        status.textContent = error instanceof Error ? error.message : String(error);
      } finally {
        submit.disabled = false;
      }
    });
    return form;
  }

  return {
    API, parseJSON, toJSON, money, moneyTick, parseMoney, toBigInt, request, get, items, q,
    pageId, el, append, clear, link, idLink, shortId, when, number, show, statusBadge, table,
    fields, showError, header, runForm, runFormOrWhy, ApiError, charts: {},
  };
})();
window.TL = TL;
