/* /experiments/{id}: the objective per iteration with the best so far, every candidate
 * (accepted or rejected), and the tried parameter grid as a heat map. */
"use strict";

(async () => {
  const { el, get, request, table, statusBadge, money, number } = TL;
  TL.header("experiment");
  const main = TL.clear(document.getElementById("main"));
  const id = TL.pageId();
  const path = `/experiments/${encodeURIComponent(id)}`;
  let detail;
  try {
    detail = await get(path);
  } catch (error) {
    main.append(el("h1", {}, "Experiment"));
    TL.showError(main.appendChild(el("div")), error);
    document.body.dataset.ready = "true";
    return;
  }
  const experiment = detail.experiment || detail;
  const iterations = (detail.iterations || []).slice().sort((a, b) => a.iteration - b.iteration);
  const spec = experiment.spec || {};
  const minimise = experiment.objective === "minimize_cost_to_event";
  document.title = `${experiment.name} · Experiment · TwinLedger`;

  const verdict = el("div", { id: "replay-verdict", "aria-live": "polite" });
  const replay = el("button", { id: "replay", type: "button" }, "Replay and verify");
  replay.addEventListener("click", async () => {
    replay.disabled = true;
    TL.clear(verdict).append(el("p", { class: "muted" }, "re-running every iteration..."));
    try {
      const result = (await request("POST", `${path}/replay`)).body;
      verdict.dataset.identical = String(Boolean(result.identical));
      TL.clear(verdict).append(el("p", { class: result.identical ? "ok" : "error" },
        result.identical
          ? `Identical: ${number(result.iterations)} iterations, ${number(result.runs_checked)} runs.`
          : "Different from the record:"),
      result.identical ? null : el("ul", {}, (result.differences || []).map((d) => el("li", {}, d))));
    } catch (error) {
      TL.showError(verdict, error);
    } finally {
      replay.disabled = false;
    }
  });

  main.append(
    el("h1", {}, "Experiment ", el("span", { class: "name" }, experiment.name), " ",
      statusBadge(experiment.status)),
    el("div", { class: "columns" },
      el("dl", { class: "fields" },
        el("dt", {}, "id"), el("dd", { class: "id" }, experiment.id),
        el("dt", {}, "twin"), el("dd", {}, TL.idLink("twin", experiment.digital_twin_id)),
        el("dt", {}, "pattern"), el("dd", {}, experiment.pattern),
        el("dt", {}, "years"), el("dd", {}, number(experiment.duration_years)),
        el("dt", {}, "objective"), el("dd", {}, experiment.objective),
        el("dt", {}, "samples"), el("dd", {}, number(experiment.samples)),
        el("dt", {}, "master seed"), el("dd", {}, String(experiment.master_seed)),
        el("dt", {}, "ended"), el("dd", {}, experiment.reason || "-"),
      ),
      el("dl", { class: "fields" },
        el("dt", {}, "iterations"), el("dd", {}, number(experiment.iterations)),
        el("dt", {}, "best iteration"), el("dd", {}, String(experiment.best_iteration ?? "-")),
        el("dt", {}, "best objective"), el("dd", {}, number(experiment.best_objective_value, 6)),
        el("dt", {}, "best cost"), el("dd", {}, money(experiment.best_cost_cents)),
        el("dt", {}, "final run"), el("dd", {}, TL.idLink("run", experiment.final_run_id)),
        el("dt", {}, "verify"), el("dd", {}, replay, verdict),
      ),
    ),
  );

  // --- objective per iteration, best so far --------------------------------------------------

  const xs = iterations.map((it) => it.iteration);
  const accepted = iterations.map((it) => (it.accepted ? it.objective_value : null));
  const rejected = iterations.map((it) => (it.accepted ? null : it.objective_value));
  let best = null;
  const bestSoFar = iterations.map((it) => {
    if (it.accepted && it.objective_value !== null) best = it.objective_value;
    return best;
  });
  const chartBox = el("section", { id: "charts", class: "charts" });
  main.append(el("h2", {}, `Objective per iteration (${minimise ? "lower" : "higher"} is better)`),
    chartBox);
  TL.chart(chartBox.appendChild(el("div", { class: "chart-holder" })), {
    name: "objective",
    title: experiment.objective,
    xLabel: "iteration",
    years: xs,
    series: [
      { label: "best so far", values: bestSoFar, colour: "#2ca02c", width: 2 },
      { label: "accepted", values: accepted, colour: "#1f77b4", points: true, pointsOnly: true },
      { label: "rejected", values: rejected, colour: "#d62728", points: true, pointsOnly: true },
    ],
  });

  // --- the tried grid as a heat map ----------------------------------------------------------

  function dimensions() {
    const space = spec.space || {};
    const dims = [];
    for (const key of ["budget_cents", "priority", "tech_level"]) {
      if (Array.isArray(space[key]) && space[key].length) dims.push([key, space[key]]);
    }
    for (const name of Object.keys(space.pattern_params || {}).sort()) {
      dims.push([`pattern_params.${name}`, space.pattern_params[name]]);
    }
    return dims;
  }
  const dims = dimensions();
  const heatBox = el("section", { id: "heatmap" });
  main.append(el("h2", {}, "Tried parameter grid"), heatBox);
  const pickX = el("select", { id: "heat-x" }, dims.map(([name], i) =>
    el("option", { value: String(i), selected: i === 0 }, name)));
  const pickY = el("select", { id: "heat-y" },
    el("option", { value: "" }, "(none)"),
    dims.map(([name], i) => el("option", { value: String(i), selected: i === 1 }, name)));
  const grid = el("div", { class: "heatmap-holder" });
  if (!dims.length) heatBox.append(el("p", { class: "muted" }, "The spec searches no dimension."));
  else {
    heatBox.append(el("p", { class: "inline" }, el("label", {}, "x ", pickX), " ",
      el("label", {}, "y ", pickY), el("span", { class: "muted" },
        " each cell: the best objective among the candidates tried with those values " +
        "(blank: not tried; hatched: no value, a sample never reached the target)")), grid);
    pickX.addEventListener("change", drawHeat);
    pickY.addEventListener("change", drawHeat);
    drawHeat();
  }

  function valueText(key, value) {
    return TL.show(key, value);
  }

  function better(a, b) {
    if (a === null || a === undefined) return b;
    if (b === null || b === undefined) return a;
    return minimise ? Math.min(a, b) : Math.max(a, b);
  }

  function drawHeat() {
    const x = dims[Number(pickX.value)];
    const y = pickY.value === "" || pickY.value === pickX.value ? null : dims[Number(pickY.value)];
    const xValues = x[1].map((v) => valueText(x[0], v));
    const yValues = y ? y[1].map((v) => valueText(y[0], v)) : [""];
    const cells = new Map(); // "xi,yi" -> {value, count, accepted}
    for (const it of iterations) {
      const params = it.parameters || {};
      const xi = xValues.indexOf(valueText(x[0], params[x[0]]));
      const yi = y ? yValues.indexOf(valueText(y[0], params[y[0]])) : 0;
      if (xi < 0 || yi < 0) continue;
      const key = `${xi},${yi}`;
      const cell = cells.get(key) || { value: null, count: 0, accepted: false, iterations: [] };
      cell.value = better(cell.value, it.objective_value);
      cell.count += 1;
      cell.accepted = cell.accepted || Boolean(it.accepted);
      cell.iterations.push(it.iteration);
      cells.set(key, cell);
    }
    const values = [...cells.values()].map((c) => c.value).filter((v) => v !== null);
    const low = Math.min(...values);
    const high = Math.max(...values);
    const shade = (value) => {
      const t = high > low ? (value - low) / (high - low) : 1;
      const good = minimise ? 1 - t : t;
      const hue = Math.round(good * 120); // red (worse) to green (better)
      return `hsl(${hue}, 65%, ${Math.round(78 - good * 30)}%)`;
    };
    const head = el("tr", {}, el("th", { class: "corner" }, y ? `${y[0]} \u2193 / ${x[0]} \u2192` : x[0]),
      xValues.map((v) => el("th", {}, v)));
    const rows = yValues.map((yText, yi) => el("tr", {}, el("th", {}, yText),
      xValues.map((xText, xi) => {
        const cell = cells.get(`${xi},${yi}`);
        if (!cell) return el("td", { class: "cell untried", "data-tried": "false" });
        const td = el("td", {
          class: `cell tried${cell.value === null ? " novalue" : ""}${cell.accepted ? " accepted" : ""}`,
          "data-tried": "true",
          title: `${x[0]}=${xText}${y ? `, ${y[0]}=${yText}` : ""}: ` +
            `${cell.value === null ? "no value" : cell.value} (iterations ${cell.iterations.join(", ")})`,
        }, cell.value === null ? "-" : number(cell.value, 3));
        if (cell.value !== null) td.style.background = shade(cell.value);
        return td;
      })));
    const heat = el("table", { class: "heatmap", id: "heatmap-grid" }, el("thead", {}, head),
      el("tbody", {}, rows));
    heat.dataset.tried = String(cells.size);
    TL.clear(grid).append(heat);
  }

  // --- candidates -------------------------------------------------------------------------------

  const varied = dims.map(([name]) => name);
  main.append(el("h2", {}, "Candidates"), table(iterations, [
    ["iteration", (it) => String(it.iteration)],
    ["purpose", (it) => it.purpose],
    ...varied.map((name) => [name, (it) => valueText(name, (it.parameters || {})[name])]),
    ["objective", (it) => number(it.objective_value, 6)],
    ["cost", (it) => money(it.cost_cents)],
    ["feasible", (it) => (it.feasible ? "yes" : "no")],
    ["accepted", (it) => el("span", { class: it.accepted ? "ok" : "muted" },
      it.accepted ? "accepted" : "rejected")],
    ["run", (it) => TL.idLink("run", it.evaluation_run_id)],
  ], { class: "grid candidates", rowAttributes: (it) => ({ class: it.accepted ? "accepted" : "" }) }));
  if (experiment.status === "running") {
    // still searching: show the new iterations as they are recorded
    main.prepend(el("p", { class: "muted" }, "Running: this page reloads every 5 seconds."));
    setTimeout(() => window.location.reload(), 5000);
  }
  document.body.dataset.ready = "true";
})();
