/* /compare?runs=A,B,...: 2 to 6 runs overlaid, their parameters side by side (differences
 * first), summary metrics, and the first year their results diverge. */
"use strict";

(async () => {
  const { el, get, table, money, number } = TL;
  TL.header("compare");
  const main = TL.clear(document.getElementById("main"));
  main.append(el("h1", {}, "Compare runs"));
  const ids = (new URLSearchParams(location.search).get("runs") || "")
    .split(",").map((s) => s.trim()).filter(Boolean);
  const problem = el("div");
  main.append(problem);
  if (ids.length < 2 || ids.length > 6) {
    TL.showError(problem, new Error("runs: give 2 to 6 run ids, e.g. /compare?runs=ID1,ID2"));
    document.body.dataset.ready = "true";
    return;
  }

  let comparison = null;
  let runs;
  let results;
  try {
    [comparison, runs, results] = await Promise.all([
      get(`/compare?runs=${ids.map(encodeURIComponent).join(",")}`),
      Promise.all(ids.map((id) => get(`/runs/${encodeURIComponent(id)}`))),
      Promise.all(ids.map((id) => get(`/runs/${encodeURIComponent(id)}/results`))),
    ]);
  } catch (error) {
    TL.showError(problem, error);
    document.body.dataset.ready = "true";
    return;
  }
  results = results.map((body) => (Array.isArray(body) ? body : TL.items(body)));
  const colour = (i) => TL.COLOURS[i % TL.COLOURS.length];
  const runLabel = (run, i) => el("span", { class: "swatch-label" },
    el("span", { class: "swatch", style: `background:${colour(i)}` }), TL.idLink("run", run.id));

  // --- divergence -----------------------------------------------------------------------------

  const divergence = el("section", { id: "divergence" });
  const first = comparison && (comparison.first_divergence ?? comparison.first_diverging_year ??
    comparison.divergence);
  let firstYear = null;
  if (first && typeof first === "object") firstYear = first.year ?? null;
  else if (typeof first === "number") firstYear = first;
  divergence.dataset.year = firstYear === null ? "" : String(firstYear);
  divergence.append(el("p", { class: firstYear === null ? "ok" : "warn" }, firstYear === null
    ? "No diverging year: the runs' results are the same over their common years."
    : `First diverging year: ${firstYear}` + (first && typeof first === "object" && first.field
      ? ` (${first.field})` : "")));
  main.append(divergence);

  // --- parameters side by side ------------------------------------------------------------------

  function flatten(run) {
    const p = run.parameters || {};
    const flat = {
      twin: run.digital_twin_id, pattern: run.pattern, duration_years: run.duration_years,
      seed: run.seed, budget_cents: run.budget_cents, tech_level: p.tech_level,
      priority: p.priority, engine_version: run.engine_version,
    };
    for (const [key, value] of Object.entries(p.pattern_params || {})) {
      flat[`pattern_params.${key}`] = value;
    }
    if (p.custom_spec) flat.custom_spec = p.custom_spec;
    return flat;
  }
  const flats = runs.map(flatten);
  const keys = [...new Set(flats.flatMap((f) => Object.keys(f)))];
  const text = (key, value) => TL.show(key, value);
  const differs = (key) => new Set(flats.map((f) => text(key, f[key]))).size > 1;
  keys.sort((a, b) => Number(differs(b)) - Number(differs(a)));
  const params = table(keys.map((key) => ({ key })), [
    ["parameter", (row) => row.key],
    ...runs.map((run, i) => [runLabel(run, i), (row) => (row.key === "twin"
      ? TL.idLink("twin", flats[i].twin) : text(row.key, flats[i][row.key]))]),
  ], { rowAttributes: (row) => ({ class: differs(row.key) ? "differs" : "" }) });
  params.id = "parameter-diff";

  const metrics = [
    ["status", (r) => r.status],
    ["habitability", (r) => number(r.habitability_score)],
    ["total spend", (r) => money(r.total_spend_cents)],
    ["total revenue", (r) => money(r.total_revenue_cents)],
    ["final balance", (r) => money(r.final_balance_cents)],
    ["digest", (r) => (r.result_digest || "-").slice(0, 19)],
  ];
  const summary = table(metrics.map(([name, cell]) => ({ name, cell })), [
    ["summary", (row) => row.name],
    ...runs.map((run, i) => [runLabel(run, i), (row) => row.cell(run)]),
  ]);
  summary.id = "summary-metrics";
  main.append(el("div", { class: "columns" },
    el("section", {}, el("h2", {}, "Parameters (differences first)"), params),
    el("section", {}, el("h2", {}, "Summary"), summary)));

  // --- overlaid series --------------------------------------------------------------------------

  const maxYear = Math.max(0, ...results.map((rows) => rows.reduce(
    (top, row) => (row.result_type === "timeline" ? top : Math.max(top, row.year)), 0)));
  const years = Array.from({ length: maxYear }, (_, i) => i + 1);
  const perRun = results.map((rows) => {
    const environment = new Array(maxYear).fill(null);
    const economic = new Array(maxYear).fill(null);
    for (const row of rows) {
      if (row.result_type === "environmental") environment[row.year - 1] = row.data;
      else if (row.result_type === "economic") economic[row.year - 1] = row.data;
    }
    return { environment, economic };
  });
  const envSeries = (key) => runs.map((run, i) => ({
    label: TL.shortId(run.id),
    colour: colour(i),
    values: perRun[i].environment.map((e) => (e ? e[key] ?? null : null)),
  }));
  const moneySeries = (key) => runs.map((run, i) => {
    const exact = perRun[i].economic.map((e) => (e ? TL.toBigInt(e[key]) : null));
    return { label: TL.shortId(run.id), colour: colour(i), money: true, exact,
      values: exact.map((c) => (c === null ? null : Number(c))) };
  });
  const marks = () => (firstYear === null ? [] : [{ year: firstYear, name: "first divergence" }]);
  const chartsBox = el("section", { id: "charts", class: "charts" });
  main.append(el("h2", {}, "Series"), chartsBox);
  for (const [name, title, series] of [
    ["temperature", "Mean surface temperature (K)", envSeries("temperature_k")],
    ["pressure", "Surface pressure (kPa)", envSeries("pressure_kpa")],
    ["habitability", "Habitability (0 to 1)", envSeries("habitability")],
    ["balance", "Balance (GCC)", moneySeries("balance_cents")],
    ["spend", "Spend per year (GCC)", moneySeries("spend_cents")],
  ]) {
    const holder = chartsBox.appendChild(el("div", { class: "chart-holder" }));
    TL.chart(holder, { name, title, years, series, events: marks });
  }
  chartsBox.dataset.years = String(years.length);
  chartsBox.dataset.runs = String(runs.length);
  document.body.dataset.ready = "true";
})();
