/* /runs/{id}: one run's per-year charts, live while it runs (Server-Sent Events), key events on
 * the time axis, time travel to a year, and a replay button that shows the verdict. */
"use strict";

(async () => {
  const { el, get, request, table, statusBadge, money, number, when } = TL;
  TL.header("run");
  const main = TL.clear(document.getElementById("main"));
  const id = TL.pageId();
  const path = `/runs/${encodeURIComponent(id)}`;
  const ENDED = new Set(["completed", "failed", "cancelled"]);

  let run;
  try {
    run = await get(path);
  } catch (error) {
    main.append(el("h1", {}, "Run"));
    TL.showError(main.appendChild(el("div")), error);
    document.body.dataset.ready = "true";
    return;
  }
  document.title = `Run ${TL.shortId(run.id)} · TwinLedger`;

  // --- header, progress, fields ------------------------------------------------------------

  const badge = el("span", { id: "run-status" }, statusBadge(run.status));
  const bar = el("div", { class: "bar" });
  const barText = el("span", { class: "bar-text" });
  const progress = el("div", { id: "progress", class: "progress", role: "progressbar",
    "aria-valuemin": 0, "aria-valuemax": 100 }, bar, barText);
  const info = el("div", { id: "run-fields" });
  const summary = el("div", { id: "run-summary" });
  main.append(
    el("h1", {}, "Run ", el("span", { class: "id", title: run.id }, run.id), " ", badge),
    progress,
    el("div", { class: "columns" }, info, summary),
  );

  function showProgress(recorded, total, status) {
    const percent = total > 0 ? Math.floor((recorded * 100) / total) : 0;
    progress.dataset.progress = String(percent);
    progress.dataset.years = String(recorded);
    progress.setAttribute("aria-valuenow", String(percent));
    bar.style.width = `${percent}%`;
    barText.textContent = `${percent}% (${number(recorded)} of ${number(total)} years)` +
      (status && status !== "running" ? `, ${status}` : "");
    TL.clear(badge).append(statusBadge(status));
  }

  function showRun(record) {
    run = record;
    const parameters = record.parameters || {};
    TL.clear(info).append(
      el("h2", {}, "Inputs"),
      el("dl", { class: "fields" },
        el("dt", {}, "twin"), el("dd", {}, TL.idLink("twin", record.digital_twin_id)),
        el("dt", {}, "pattern"), el("dd", {}, record.pattern),
        el("dt", {}, "years"), el("dd", {}, number(record.duration_years)),
        el("dt", {}, "seed"), el("dd", {}, String(record.seed)),
        el("dt", {}, "budget"), el("dd", {}, money(record.budget_cents)),
        el("dt", {}, "tech level"), el("dd", {}, String(parameters.tech_level ?? "-")),
        el("dt", {}, "priority"), el("dd", {}, String(parameters.priority ?? "-")),
        el("dt", {}, "pattern params"),
        el("dd", {}, TL.show("pattern_params", parameters.pattern_params || {})),
        el("dt", {}, "engine"), el("dd", {}, record.engine_version),
        el("dt", {}, "queued"), el("dd", {}, when(record.queued_at)),
        record.experiment_id ? [el("dt", {}, "experiment"),
          el("dd", {}, TL.idLink("experiment", record.experiment_id),
            ` iteration ${record.iteration}, sample ${record.sample_index}`)] : null,
      ),
    );
    TL.clear(summary).append(
      el("h2", {}, "Outcome"),
      el("dl", { class: "fields" },
        el("dt", {}, "status"), el("dd", {}, record.status),
        el("dt", {}, "habitability"), el("dd", {}, number(record.habitability_score)),
        el("dt", {}, "total spend"), el("dd", { id: "total-spend" }, money(record.total_spend_cents)),
        el("dt", {}, "total revenue"), el("dd", {}, money(record.total_revenue_cents)),
        el("dt", {}, "final balance"),
        el("dd", { id: "final-balance" }, money(record.final_balance_cents)),
        el("dt", {}, "digest"), el("dd", { class: "digest" }, record.result_digest || "-"),
        record.error_message ? [el("dt", {}, "message"), el("dd", {}, record.error_message)] : null,
        el("dt", {}, "audit"),
        el("dd", {}, el("a", { href: `${TL.API}${path}/events` }, "stored events (JSON)")),
      ),
      actions,
    );
    showProgress(record.current_year || 0, record.duration_years, record.status);
    cancel.hidden = ENDED.has(record.status);
  }

  // --- replay, cancel, time travel ----------------------------------------------------------

  const verdict = el("div", { id: "replay-verdict", "aria-live": "polite" });
  const replay = el("button", { id: "replay", type: "button" }, "Replay and verify");
  const cancel = el("button", { id: "cancel", type: "button", class: "secondary" }, "Cancel run");
  const actions = el("div", { class: "actions" }, replay, " ", cancel, verdict);
  replay.addEventListener("click", async () => {
    replay.disabled = true;
    TL.clear(verdict).append(el("p", { class: "muted" }, "re-simulating from the recorded inputs..."));
    try {
      const result = (await request("POST", `${path}/replay`)).body;
      verdict.dataset.identical = String(Boolean(result.identical));
      const lines = [];
      if (result.identical) {
        lines.push(el("p", { class: "ok" }, `Identical: ${number(result.years)} years replayed ` +
          "give the recorded results."));
      } else {
        const d = result.divergence || {};
        lines.push(el("p", { class: "error" },
          `Diverged${d.year ? ` at year ${d.year}` : ""}: ${d.field || "results"} recorded ` +
          `${d.recorded ?? "?"}, replayed ${d.replayed ?? "?"}.`));
      }
      lines.push(el("p", { class: "digest" }, `digest ${result.digest || "-"}`));
      if (result.recorded_digest && result.recorded_digest !== result.digest) {
        lines.push(el("p", { class: "digest" }, `recorded ${result.recorded_digest}`));
      }
      if (result.complete === false) lines.push(el("p", { class: "muted" }, "(run not complete)"));
      TL.clear(verdict).append(...lines);
    } catch (error) {
      TL.showError(verdict, error);
    } finally {
      replay.disabled = false;
    }
  });
  cancel.addEventListener("click", async () => {
    try {
      await request("POST", `${path}/cancel`, { reason: "cancelled from the dashboard" });
      showRun(await get(path));
    } catch (error) {
      TL.showError(verdict, error);
    }
  });

  const travelYear = el("input", { id: "travel-year", type: "number", min: 1,
    max: run.duration_years, value: 1 });
  const travelOut = el("div", { id: "travel-state" });
  const travel = el("form", { class: "inline" }, el("label", {}, "State at the end of year ",
    travelYear), el("button", { type: "submit", id: "travel-state-show" }, "Show"));
  travel.addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      const state = await get(`${path}/state?year=${encodeURIComponent(travelYear.value)}`);
      const environment = state.environment || {};
      const economic = state.economic || {};
      TL.clear(travelOut).append(TL.fields({
        year: state.year,
        temperature_k: environment.temperature_k,
        pressure_kpa: environment.pressure_kpa,
        habitability: environment.habitability,
        composition_pct: environment.composition_pct,
        balance_cents: economic.balance_cents,
        total_spend_cents: state.total_spend_cents,
        total_revenue_cents: state.total_revenue_cents,
        key_events_so_far: (state.key_events || []).length,
      }));
    } catch (error) {
      TL.showError(travelOut, error);
    }
  });

  // --- the series ----------------------------------------------------------------------------

  const byYear = new Map(); // year -> {economic, environment, events}
  let loadedTo = 0;
  const chartsBox = el("section", { id: "charts", class: "charts" });
  const eventsBox = el("section", { id: "key-events" });
  main.append(el("h2", {}, "Per year"), chartsBox, el("h2", {}, "Key events"), eventsBox,
    el("h2", {}, "Time travel"), travel, travelOut);
  showRun(run);

  function slot(year) {
    let entry = byYear.get(year);
    if (!entry) {
      entry = { economic: null, environment: null, events: [] };
      byYear.set(year, entry);
    }
    return entry;
  }

  function take(rows) {
    for (const row of rows) {
      const entry = slot(row.year);
      if (row.result_type === "economic") entry.economic = row.data;
      else if (row.result_type === "environmental") entry.environment = row.data;
      else if (row.result_type === "timeline") {
        entry.events = Array.isArray(row.data) ? row.data : (row.data && row.data.key_events) || [];
      }
      if (row.result_type !== "timeline" && row.year > loadedTo) loadedTo = row.year;
    }
  }

  async function fetchFrom(year) {
    const body = await get(`${path}/results?from_year=${year}`);
    take(Array.isArray(body) ? body : TL.items(body));
  }

  function columns() {
    const years = [];
    for (let year = 1; year <= loadedTo; year++) years.push(year);
    const env = (key) => years.map((y) => {
      const e = byYear.get(y);
      return e && e.environment ? e.environment[key] ?? null : null;
    });
    const cents = (key) => years.map((y) => {
      const e = byYear.get(y);
      return e && e.economic ? TL.toBigInt(e.economic[key]) : null;
    });
    const gases = new Set();
    for (const year of years) {
      const e = byYear.get(year);
      if (e && e.environment && e.environment.composition_pct) {
        for (const gas of Object.keys(e.environment.composition_pct)) gases.add(gas);
      }
    }
    const composition = [...gases].sort().map((gas) => ({
      label: `${gas} %`,
      values: years.map((y) => {
        const e = byYear.get(y);
        const c = e && e.environment && e.environment.composition_pct;
        return c && gas in c ? c[gas] : null;
      }),
    }));
    const money = (key) => {
      const exact = cents(key);
      return { exact, values: exact.map((c) => (c === null ? null : Number(c))) };
    };
    return {
      years,
      temperature: [{ label: "temperature K", values: env("temperature_k") }],
      pressure: [{ label: "pressure kPa", values: env("pressure_kpa") }],
      composition,
      habitability: [{ label: "habitability", values: env("habitability") }],
      money: [
        { label: "spend", money: true, ...money("spend_cents") },
        { label: "revenue", money: true, ...money("revenue_cents") },
        { label: "balance", money: true, scale: "balance", width: 2, ...money("balance_cents") },
      ],
    };
  }

  function keyEvents() {
    const list = [];
    for (const [year, entry] of [...byYear.entries()].sort((a, b) => a[0] - b[0])) {
      for (const event of entry.events) list.push({ year, name: event.name, description: event.description });
    }
    return list;
  }

  const charts = {};
  let gasKey = "";
  function draw() {
    const data = columns();
    const specs = [
      ["temperature", "Mean surface temperature (K)", data.temperature, {}],
      ["pressure", "Surface pressure (kPa)", data.pressure, {}],
      ["composition", "Atmosphere composition (% by volume, log scale)", data.composition,
        { log: true }],
      ["habitability", "Habitability (0 to 1)", data.habitability, {}],
      ["money", "Spend and revenue per year (left), balance (right), GCC", data.money,
        { rightLabel: "balance" }],
    ];
    const newGasKey = data.composition.map((s) => s.label).join(",");
    for (const [name, title, series, extra] of specs) {
      if (charts[name] && (name !== "composition" || newGasKey === gasKey)) {
        charts[name].update(data.years, series);
        continue;
      }
      if (charts[name]) {
        charts[name].plot.destroy();
        charts[name].frame.remove();
      }
      const holder = chartsBox.querySelector(`[data-holder="${name}"]`) ||
        chartsBox.appendChild(el("div", { class: "chart-holder", "data-holder": name }));
      charts[name] = TL.chart(holder, { name, title, years: data.years, series, events: keyEvents,
        ...extra });
    }
    gasKey = newGasKey;
    const events = keyEvents();
    TL.clear(eventsBox).append(table(events, [
      ["year", (e) => String(e.year)],
      ["event", (e) => e.name],
      ["description", (e) => e.description || ""],
    ], { empty: "No key events yet." }));
    chartsBox.dataset.years = String(data.years.length);
  }

  try {
    if ((run.current_year || 0) > 0 || ENDED.has(run.status)) await fetchFrom(1);
    draw();
  } catch (error) {
    TL.showError(chartsBox.appendChild(el("div")), error);
  }

  // --- live progress -------------------------------------------------------------------------

  // The run's row and its results are different read tables, caught up one after the other:
  // results may trail the progress event by a moment, so an empty fetch is retried shortly.
  let fetching = null; // the one load in flight, if any
  let wanted = loadedTo;
  const pause = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
  // A load that fails while following (the server went away) is shown, never thrown: the stream
  // retries, and the next progress event loads what is missing.
  const liveError = el("div");
  chartsBox.after(liveError);
  const report = (error) => TL.showError(liveError, error);
  async function load() {
    let idle = 0;
    while (wanted > loadedTo && idle < 40) {
      const before = loadedTo;
      await fetchFrom(loadedTo + 1);
      TL.clear(liveError);
      if (loadedTo === before) {
        idle += 1;
        await pause(250);
      } else {
        idle = 0;
        draw();
      }
    }
  }
  function catchUp() {
    if (!fetching) {
      fetching = load().catch(report).finally(() => {
        fetching = null;
      });
    }
    return fetching;
  }

  async function finish() {
    const record = await get(path);
    showRun(record);
    wanted = Math.max(wanted, record.current_year || 0);
    if (fetching) await fetching;
    await catchUp();
    document.body.dataset.live = "ended";
  }

  function onProgress(message) {
    let data;
    try {
      data = TL.parseJSON(message.data);
    } catch (error) {
      return;
    }
    // {status, years_recorded, duration_years, progress, ended} (GET /runs/{id}/progress)
    showProgress(data.years_recorded, data.duration_years, data.status);
    wanted = Math.max(wanted, data.years_recorded);
    catchUp();
    if (data.ended) end();
  }

  let ended = false;
  function end() {
    if (ended) return;
    ended = true;
    source.close();
    finish().catch(report);
  }

  let source = null;
  if (!ENDED.has(run.status)) {
    document.body.dataset.live = "following";
    source = new EventSource(`${TL.API}${path}/progress`);
    source.addEventListener("progress", onProgress);
    source.addEventListener("end", onProgress);
    source.onerror = async () => {
      // The server closes the stream once the run has ended (EventSource would reconnect), or
      // the connection broke: then the stream's own retry goes on.
      try {
        if (ENDED.has((await get(path)).status)) end();
      } catch (error) {
        // the server is away: the stream retries
      }
    };
  } else {
    document.body.dataset.live = "ended";
  }
  document.body.dataset.ready = "true";
})();
