/* / : twins, recent runs (pick 2-6 to compare), projection lag, and a form that starts a run. */
"use strict";

(async () => {
  const { el, get, items, q, table, idLink, statusBadge, money, when, number } = TL;
  TL.header("overview");
  const main = TL.clear(document.getElementById("main"));
  const twinsBox = el("section", { id: "twins" }, el("h2", {}, "Twins"));
  const runsBox = el("section", { id: "runs" }, el("h2", {}, "Recent runs"));
  const lagBox = el("section", { id: "projections" }, el("h2", {}, "Projections"));
  const formBox = el("section", { id: "start-run" }, el("h2", {}, "Start a run"));
  main.append(el("h1", {}, "Overview"),
    el("div", { class: "columns" }, twinsBox, formBox), runsBox, lagBox);

  let twins = [];
  try {
    twins = items(await get(`/twins${q({ limit: 200 })}`));
    twinsBox.append(table(twins, [
      ["name", (t) => el("a", { href: TL.link.twin(t.id) }, t.name || TL.shortId(t.id))],
      ["body", (t) => t.source_body],
      ["status", (t) => statusBadge(t.status)],
      ["runs", (t) => number(t.run_count)],
      ["expires", (t) => when(t.expires_at)],
    ], { empty: "No twins yet: clone one with `twinledger clone` or POST /api/v1/twins." }));
    const usable = twins.filter((t) => t.status !== "deleted");
    formBox.append(usable.length ? await TL.runFormOrWhy(usable, usable[0].id)
      : el("p", { class: "muted" }, "Clone a twin first."));
  } catch (error) {
    TL.showError(twinsBox.appendChild(el("div")), error);
  }

  try {
    let page;
    try {
      page = await get(`/runs${q({ order_by: "queued_at desc", limit: 25 })}`);
    } catch (error) {
      page = await get(`/runs${q({ limit: 25 })}`);
    }
    const runs = items(page);
    const chosen = new Set();
    const compare = el("a", { class: "button disabled", id: "compare-selected", href: "#" },
      "Compare selected");
    const refresh = () => {
      const ok = chosen.size >= 2 && chosen.size <= 6;
      compare.className = ok ? "button" : "button disabled";
      compare.setAttribute("href", ok ? TL.link.compare([...chosen]) : "#");
      compare.textContent = `Compare selected (${chosen.size})`;
    };
    runsBox.append(table(runs, [
      ["", (r) => el("input", { type: "checkbox", class: "pick", "aria-label": "compare",
        onchange: (event) => {
          if (event.target.checked) chosen.add(r.id);
          else chosen.delete(r.id);
          refresh();
        } })],
      ["run", (r) => idLink("run", r.id)],
      ["twin", (r) => idLink("twin", r.digital_twin_id)],
      ["pattern", (r) => r.pattern],
      ["status", (r) => statusBadge(r.status)],
      ["progress", (r) => `${Math.floor((r.progress || 0) * 100)}%`],
      ["habitability", (r) => number(r.habitability_score)],
      ["final balance", (r) => money(r.final_balance_cents)],
      ["queued", (r) => when(r.queued_at)],
    ], { empty: "No runs yet." }), el("p", {}, compare, " pick 2 to 6 runs."));
    refresh();
  } catch (error) {
    TL.showError(runsBox.appendChild(el("div")), error);
  }

  try {
    const report = await get("/projections");
    const projections = report && Array.isArray(report.projections) ? report.projections
      : items(report);
    lagBox.append(
      el("p", { class: "muted" }, `head of the log: ${number(report && report.head)}`),
      table(projections, [
        ["projection", (p) => p.name],
        ["position", (p) => number(p.position)],
        ["lag", (p) => el("span", { class: p.lag > 0 ? "warn" : "" }, number(p.lag))],
        ["error", (p) => p.error || "-"],
      ]),
    );
    const parked = report && Array.isArray(report.parked) ? report.parked.length : 0;
    if (parked) lagBox.append(el("p", { class: "warn" }, `${parked} parked events`));
  } catch (error) {
    TL.showError(lagBox.appendChild(el("div")), error);
  }
  document.body.dataset.ready = "true";
})();
