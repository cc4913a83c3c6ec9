/* Line charts over simulated years (uPlot, vendored in static/vendor: no network needed).
 *
 * Each chart's container carries data-points (the years drawn) and TL.charts[name] the same, so
 * a test or a user can check that every year was drawn. Money series plot the integer cents;
 * their legend prints the exact cents of the hovered year (TL.money), never a rounded float.
 */
"use strict";

(() => {
  const COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2",
    "#17becf", "#7f7f7f", "#bcbd22"];
  const SYNC = uPlot.sync("twinledger-years");
  const live = [];

  /** A faint dashed line and a small triangle at the years of key events. */
  function eventMarks(getEvents) {
    return {
      hooks: {
        draw: [
          (u) => {
            const events = getEvents();
            if (!events.length) return;
            const { ctx } = u;
            const { left, top, width, height } = u.bbox;
            const size = 4 * devicePixelRatio;
            ctx.save();
            ctx.strokeStyle = "rgba(160, 82, 0, 0.35)";
            ctx.fillStyle = "rgba(160, 82, 0, 0.85)";
            ctx.lineWidth = devicePixelRatio;
            ctx.setLineDash([3 * devicePixelRatio, 3 * devicePixelRatio]);
            for (const event of events) {
              const x = Math.round(u.valToPos(event.year, "x", true));
              if (x < left || x > left + width) continue;
              ctx.beginPath();
              ctx.moveTo(x, top);
              ctx.lineTo(x, top + height);
              ctx.stroke();
              ctx.beginPath();
              ctx.moveTo(x - size, top - size * 1.6);
              ctx.lineTo(x + size, top - size * 1.6);
              ctx.lineTo(x, top);
              ctx.closePath();
              ctx.fill();
            }
            ctx.restore();
          },
        ],
      },
    };
  }

  /** Under the chart: the key events of the hovered year (text only). */
  function eventHover(getEvents, line) {
    return {
      hooks: {
        setCursor: [
          (u) => {
            const idx = u.cursor.idx;
            const year = idx === null || idx === undefined ? null : u.data[0][idx];
            const here = year === null ? [] : getEvents().filter((e) => e.year === year);
            line.textContent = here.length
              ? `year ${year}: ${here.map((e) => e.name).join(", ")}`
              : "\u00a0";
          },
        ],
      },
    };
  }

  function width(container) {
    return Math.max(320, Math.floor(container.getBoundingClientRect().width) - 4);
  }

  /**
   * chart(container, spec) -> {update(years, columns), plot}
   * spec: {name, title, years, series: [{label, values, scale?, money?: bool, exact?: []}],
   *        events?: () => [{year, name}], yLabel?, rightLabel?, height?}
   * A money series has money: true and exact: the BigInt cents per year (legend text).
   */
  function chart(container, spec) {
    const seriesSpec = spec.series;
    const moneyScales = new Set(seriesSpec.filter((s) => s.money).map((s) => s.scale || "y"));
    const scales = { x: { time: false } };
    const axes = [{
      label: spec.xLabel || "year",
      stroke: "#444",
      grid: { stroke: "#eee" },
      incrs: [1, 2, 5, 10, 20, 25, 50, 100, 200, 250, 500, 1000], // whole years or iterations
    }];
    const scaleNames = [...new Set(seriesSpec.map((s) => s.scale || "y"))];
    scaleNames.forEach((scale, index) => {
      if (spec.log && index === 0) scales[scale] = { distr: 3, log: 10 };
      else if (moneyScales.has(scale)) {
        // at least one GCC tall, so that flat money (all zero) gets whole-cent ticks
        scales[scale] = {
          auto: true,
          range: (u, min, max) => (max - min >= 100
            ? uPlot.rangeNum(min, max, 0.1, true)
            : [Math.floor(min / 100) * 100, Math.floor(min / 100) * 100 + 100]),
        };
      } else scales[scale] = { auto: true };
      axes.push({
        scale,
        side: index === 0 ? 3 : 1,
        label: index === 0 ? spec.yLabel || "" : spec.rightLabel || "",
        stroke: "#444",
        grid: { show: index === 0, stroke: "#eee" },
        size: 70,
        values: moneyScales.has(scale)
          ? (u, ticks) => ticks.map((tick) => TL.moneyTick(tick))
          : (u, ticks) => ticks.map((tick) => formatTick(tick)),
      });
    });
    const series = [{ label: spec.xLabel || "year", value: (u, v) => (v === null ? "-" : String(v)) }];
    seriesSpec.forEach((s, index) => {
      const entry = {
        label: s.label,
        scale: s.scale || "y",
        stroke: s.colour || COLOURS[index % COLOURS.length],
        width: s.width || 1.5,
        dash: s.dash,
        points: { show: s.points || false, size: s.pointsOnly ? 9 : 5 },
        paths: s.pointsOnly ? () => null : undefined,
        spanGaps: s.spanGaps || false,
        value: s.money
          ? (u, v, si, idx) => {
              const exact = u.series[si]._exact;
              return idx === null || idx === undefined || !exact ? "-" : TL.money(exact[idx]);
            }
          : (u, v) => (v === null || v === undefined ? "-" : formatValue(v)),
      };
      for (const key of Object.keys(entry)) if (entry[key] === undefined) delete entry[key];
      series.push(entry);
    });
    const options = {
      title: spec.title,
      width: width(container),
      height: spec.height || 230,
      scales,
      axes,
      series,
      cursor: { sync: { key: SYNC.key }, drag: { x: true, y: false } },
      legend: { live: true },
      plugins: [],
    };
    const frame = TL.el("div", { class: "chart", "data-chart": spec.name });
    container.append(frame);
    if (spec.events) {
      const line = TL.el("div", { class: "chart-events muted" }, "\u00a0");
      options.plugins.push(eventMarks(spec.events), eventHover(spec.events, line));
      container.append(line);
    }
    const plot = new uPlot(options, toData(spec.years, seriesSpec, spec.log), frame);
    const handle = {
      plot,
      frame,
      update(years, columns) {
        columns.forEach((column, i) => {
          seriesSpec[i].values = column.values;
          seriesSpec[i].exact = column.exact;
        });
        spec.years = years;
        plot.setData(toData(years, seriesSpec, spec.log));
        record();
      },
    };
    function record() {
      seriesSpec.forEach((s, i) => {
        plot.series[i + 1]._exact = s.exact;
      });
      frame.dataset.points = String(spec.years.length);
      frame.dataset.series = String(seriesSpec.length);
      TL.charts[spec.name] = { points: spec.years.length, series: seriesSpec.length };
    }
    record();
    live.push({ plot, container });
    return handle;
  }

  function toData(years, seriesSpec, log) {
    // a log scale cannot show 0 or less: those years are gaps
    const column = (values) => (log ? values.map((v) => (v > 0 ? v : null)) : values);
    return [years, ...seriesSpec.map((s) => column(s.values))];
  }

  function formatTick(value) {
    if (value === null || value === undefined) return "";
    const magnitude = Math.abs(value);
    if (magnitude !== 0 && (magnitude >= 1e6 || magnitude < 1e-3)) return value.toExponential(1);
    return value.toLocaleString("en-US", { maximumFractionDigits: 3 });
  }

  function formatValue(value) {
    const magnitude = Math.abs(value);
    if (magnitude !== 0 && (magnitude >= 1e7 || magnitude < 1e-4)) return value.toExponential(4);
    return value.toLocaleString("en-US", { maximumFractionDigits: 4 });
  }

  let pending = null;
  window.addEventListener("resize", () => {
    clearTimeout(pending);
    pending = setTimeout(() => {
      for (const { plot, container } of live) {
        plot.setSize({ width: width(container), height: plot.height });
      }
    }, 100);
  });

  TL.chart = chart;
  TL.COLOURS = COLOURS;
})();
