/* /twins/{id}: the twin, its runs and experiments, and a form that starts a run on it. */
"use strict";

(async () => {
  const { el, get, items, q, table, idLink, statusBadge, money, when, number } = TL;
  TL.header("twin");
  const main = TL.clear(document.getElementById("main"));
  const id = TL.pageId();
  let twin;
  try {
    twin = await get(`/twins/${encodeURIComponent(id)}`);
  } catch (error) {
    main.append(el("h1", {}, "Twin"));
    TL.showError(main.appendChild(el("div")), error);
    document.body.dataset.ready = "true";
    return;
  }
  document.title = `${twin.name} · Twin · TwinLedger`;
  const state = twin.state || {};
  const atmosphere = state.atmosphere || {};
  const runsBox = el("section", { id: "twin-runs" }, el("h2", {}, "Runs"));
  const experimentsBox = el("section", { id: "twin-experiments" }, el("h2", {}, "Experiments"));
  const formBox = el("section", { id: "start-run" }, el("h2", {}, "Start a run"));
  main.append(
    el("h1", {}, "Twin ", el("span", { class: "name" }, twin.name), " ", statusBadge(twin.status)),
    el("p", { class: "muted" }, twin.description || ""),
    el("div", { class: "columns" },
      el("section", {},
        TL.fields(twin, ["id", "source_body", "solar_system", "simulation_type", "created_by",
          "created_at", "expires_at", "deleted_at", "ended_reason", "run_count",
          "completed_run_count", "failed_run_count", "active_run_count"]),
        el("h2", {}, "State when cloned"),
        TL.fields({
          mean_temperature_k: atmosphere.mean_temperature_k,
          surface_pressure_kpa: atmosphere.surface_pressure_kpa,
          composition_pct: atmosphere.composition_pct,
        })),
      formBox),
    runsBox,
    experimentsBox,
  );
  formBox.append(twin.status === "deleted"
    ? el("p", { class: "muted" }, "This twin has ended: it takes no new runs.")
    : await TL.runFormOrWhy([twin], twin.id));

  try {
    const runs = items(await get(`/runs${q({ twin: twin.id, limit: 200 })}`));
    runsBox.append(table(runs, [
      ["run", (r) => idLink("run", r.id)],
      ["pattern", (r) => r.pattern],
      ["years", (r) => number(r.duration_years)],
      ["seed", (r) => String(r.seed)],
      ["status", (r) => statusBadge(r.status)],
      ["progress", (r) => `${Math.floor((r.progress || 0) * 100)}%`],
      ["habitability", (r) => number(r.habitability_score)],
      ["final balance", (r) => money(r.final_balance_cents)],
      ["queued", (r) => when(r.queued_at)],
    ], { empty: "No runs yet." }));
    const done = runs.filter((r) => r.status === "completed").slice(-6).map((r) => r.id);
    if (done.length >= 2) {
      runsBox.append(el("p", {}, el("a", { class: "button", href: TL.link.compare(done) },
        `Compare the last ${done.length} completed runs`)));
    }
  } catch (error) {
    TL.showError(runsBox.appendChild(el("div")), error);
  }
  try {
    const experiments = items(await get(`/experiments${q({ twin: twin.id })}`));
    experimentsBox.append(table(experiments, [
      ["experiment", (x) => el("a", { href: TL.link.experiment(x.id) }, x.name || TL.shortId(x.id))],
      ["objective", (x) => x.objective],
      ["status", (x) => statusBadge(x.status)],
      ["iterations", (x) => number(x.iterations)],
      ["best", (x) => number(x.best_objective_value)],
    ], { empty: "No experiments." }));
  } catch (error) {
    TL.showError(experimentsBox.appendChild(el("div")), error);
  }
  document.body.dataset.ready = "true";
})();
