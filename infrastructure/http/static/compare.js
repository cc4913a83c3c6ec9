/* /compare?runs=A,B,...: 2 to 6 runs overlaid, their parameters side by side (differences
 * first), summary metrics, and the first year their results diverge. One request: GET
 * /api/v1/compare, which decides what differs (projections/compare.py); this page only shows it. */
"use strict";

(async () => {
  const { el, get, table } = TL;
  TL.header("compare");
  const main = TL.clear(document.getElementById("main"));
  main.append(el("h1", {}, "Compare runs"));
  const given = new URLSearchParams(location.search).get("runs") || "";
  const problem = el("div");
  main.append(problem);

  let comparison;
  try {
    comparison = await get(`/compare?runs=${encodeURIComponent(given)}`);
  } catch (error) {
    TL.showError(problem, error);
    document.body.dataset.ready = "true";
    return;
  }
  const ids = comparison.run_ids || [];
  const series = comparison.series || [];
  const colour = (i) => TL.COLOURS[i % TL.COLOURS.length];
  const swatch = (i) => {
    const mark = el("span", { class: "swatch" });
    mark.style.background = colour(i);
    return mark;
  };
  const runLabel = (id, i) => el("span", { class: "swatch-label" }, swatch(i), TL.idLink("run", id));

  // --- divergence -----------------------------------------------------------------------------

  const first = comparison.first_divergence;
  const divergence = el("section", { id: "divergence" });
  divergence.dataset.year = first ? String(first.year) : "";
  if (first) {
    divergence.append(el("p", { class: "warn" }, `First diverging year: ${first.year} (${first.field})`),
      table([first], [[`year ${first.year}`, () => first.field],
        ...ids.map((id, i) => [runLabel(id, i), () => TL.show(first.field, first.values[i])])],
      { class: "grid compact" }));
  } else {
    divergence.append(el("p", { class: "ok" }, "No diverging year: the runs' results are the same " +
      `over their ${comparison.common_years} common years.`));
  }
  main.append(divergence);

  // --- parameters and metrics side by side ------------------------------------------------------

  const cell = (name, value) => {
    if (name === "twin") return TL.idLink("twin", value);
    if (name === "result_digest" && value) {
      return el("span", { class: "digest", title: value }, `${String(value).slice(0, 19)}...`);
    }
    return TL.show(name, value);
  };
  const sideBySide = (rows, heading, id) => {
    const ordered = rows.slice().sort((a, b) => Number(b.differs) - Number(a.differs));
    const grid = table(ordered, [
      [heading, (row) => row.name],
      ...ids.map((runId, i) => [runLabel(runId, i), (row) => cell(row.name, row.values[i])]),
    ], { rowAttributes: (row) => ({ class: row.differs ? "differs" : "" }) });
    grid.id = id;
    return grid;
  };
  // side by side up to 3 runs; below each other beyond, so that every run keeps a readable column
  main.append(el("div", { class: ids.length <= 3 ? "columns" : "stacked" },
    el("section", {}, el("h2", {}, "Parameters (differences first)"),
      sideBySide(comparison.parameters || [], "parameter", "parameter-diff")),
    el("section", {}, el("h2", {}, "Summary"),
      sideBySide(comparison.metrics || [], "metric", "summary-metrics"))));

  // --- overlaid series --------------------------------------------------------------------------

  const maxYear = Math.max(0, ...series.map((s) => (s.years.length ? s.years[s.years.length - 1] : 0)));
  const years = Array.from({ length: maxYear }, (_, i) => i + 1);
  const column = (s, group, key) => {
    const values = new Array(maxYear).fill(null);
    const source = (s[group] || {})[key] || [];
    s.years.forEach((year, i) => {
      values[year - 1] = source[i] ?? null;
    });
    return values;
  };
  const lines = (group, key) => series.map((s, i) => ({
    label: TL.shortId(s.run_id), colour: colour(i), values: column(s, group, key),
  }));
  const money = (key) => series.map((s, i) => {
    const exact = column(s, "economic", key).map((v) => (v === null ? null : TL.toBigInt(v)));
    return { label: TL.shortId(s.run_id), colour: colour(i), money: true, exact,
      values: exact.map((c) => (c === null ? null : Number(c))) };
  });
  const marks = () => (first ? [{ year: first.year, name: `first divergence (${first.field})` }] : []);
  const chartsBox = el("section", { id: "charts", class: "charts" });
  main.append(el("h2", {}, "Series"), chartsBox);
  for (const [name, title, data] of [
    ["temperature", "Mean surface temperature (K)", lines("environmental", "temperature_k")],
    ["pressure", "Surface pressure (kPa)", lines("environmental", "pressure_kpa")],
    ["habitability", "Habitability (0 to 1)", lines("environmental", "habitability")],
    ["balance", "Balance (GCC)", money("balance_cents")],
    ["spend", "Spend per year (GCC)", money("spend_cents")],
    ["revenue", "Revenue per year (GCC)", money("revenue_cents")],
  ]) {
    const holder = chartsBox.appendChild(el("div", { class: "chart-holder" }));
    TL.chart(holder, { name, title, years, series: data, events: marks });
  }
  chartsBox.dataset.years = String(years.length);
  chartsBox.dataset.runs = String(series.length);
  document.body.dataset.ready = "true";
})();
