// The episode player: filters choose an episode; a slider (keyboard, mouse, or a click on a
// plot) moves one cursor across every plot of it, and shows that step's logged values and
// the simulator's drawing (or gauges of the observed states within their ranges).
// Scenario figures are drawn first when they come near the window (a page may hold dozens),
// then every other one, one at a time after the page has loaded, so that printing and a
// full-page screenshot show them all.
(function () {
  const draw = (div) => {
    if (div.dataset.drawn) return;
    div.dataset.drawn = "1";
    const spec = JSON.parse(document.querySelector(`script[data-figure-for="${div.id}"]`).textContent);
    Plotly.newPlot(div, spec.data, spec.layout, { displaylogo: false });
  };
  const observer = new IntersectionObserver((entries) => {
    for (const entry of entries) if (entry.isIntersecting) { draw(entry.target); observer.unobserve(entry.target); }
  }, { rootMargin: "400px" });
  document.querySelectorAll(".lazy-figure").forEach((div) => observer.observe(div));
  const pending = () => [...document.querySelectorAll(".lazy-figure")].filter((d) => !d.dataset.drawn);
  const next = () => {
    const div = pending()[0];
    if (!div) return;
    draw(div);
    observer.unobserve(div);
    setTimeout(next, 0); // one figure per task: the page stays responsive while they draw
  };
  window.addEventListener("load", () => setTimeout(next, 0));
  window.addEventListener("beforeprint", () => pending().forEach(draw));
})();

(function () {
  const data = JSON.parse(document.getElementById("run-data").textContent);
  const $ = (id) => document.getElementById(id);
  const units = data.units || {};
  const STATE = data.prefixes.state, ACTION = data.prefixes.action;  // jobs/rundir.py's
  const bare = (column) => column.startsWith(STATE) ? column.slice(STATE.length) : column;
  const label = (column) => {
    const name = column.startsWith(ACTION) ? column.slice(ACTION.length) : bare(column);
    return units[column] ? `${name} [${units[column]}]` : name;
  };
  const rows = [
    ...data.states.map((s) => STATE + s),
    ...data.actions.map((a) => ACTION + a),
    "reward",
  ];
  let episode = null;
  let step = 0;
  const perStep = data.time.per_step;  // model time per step: axes in the simulator's time
  const at = (s) => s * perStep;

  function fillSelect(id, values) {
    const select = $(id);
    for (const v of [...new Set(values)].filter((v) => v !== null && v !== undefined).sort()) {
      const option = document.createElement("option");
      option.value = option.textContent = v;
      select.appendChild(option);
    }
  }
  fillSelect("filter-phase", data.episodes.map((e) => e.phase));
  fillSelect("filter-controller", data.episodes.map((e) => e.controller));
  fillSelect("filter-lesson", data.episodes.map((e) => e.lesson));

  function scenarioText(e) {
    return Object.entries(e.scenario).map(([k, v]) => `${k}=${+v.toFixed(4)}`).join(" ");
  }

  function matching() {
    const phase = $("filter-phase").value, controller = $("filter-controller").value;
    const lesson = $("filter-lesson").value, text = $("filter-scenario").value.trim();
    const minReturn = $("filter-return").value === "" ? -Infinity : +$("filter-return").value;
    const ended = $("filter-terminated").checked;
    return data.episodes.filter((e) =>
      (!phase || e.phase === phase) && (!controller || e.controller === controller) &&
      (!lesson || e.lesson === lesson) && (!text || scenarioText(e).includes(text)) &&
      e.return >= minReturn && (!ended || e.terminated));
  }

  function refreshList() {
    const list = $("episode-list");
    const keep = list.value;
    list.innerHTML = "";
    for (const e of matching()) {
      const option = document.createElement("option");
      option.value = e.id;
      option.textContent = `${e.phase} ${e.controller} ${e.lesson ?? ""} return ${e.return.toFixed(3)} ` +
        `(${e.length} steps${e.terminated ? ", ended" : ""}) ${scenarioText(e)} [${e.id}]`;
      list.appendChild(option);
    }
    if ([...list.options].some((o) => o.value === keep)) list.value = keep;
    else if (list.options.length) { list.selectedIndex = 0; show(list.value); }
  }

  function series(e, column) {
    return column === "reward" ? e.reward : (e.values[column] || []);
  }

  function show(id) {
    episode = data.episodes.find((e) => e.id === id);
    if (!episode) return;
    // an assessment episode is drawn with the other controller's episode of its scenario
    const partner = episode.assessed === null ? null : data.episodes.find((e) =>
      e.assessed === episode.assessed && e.controller !== episode.controller);
    const n = rows.length, gap = 0.02, h = (1 - gap * (n - 1)) / n;
    const traces = [], layout = {
      height: 120 * n + 60, margin: { t: 20, b: 40, l: 70, r: 10 }, showlegend: !!partner,
      legend: { orientation: "h", y: 1.02, yanchor: "bottom" },
      xaxis: { title: { text: data.time.title }, anchor: "y" + n },
      shapes: [{ type: "line", xref: "x", yref: "paper", x0: 0, x1: 0, y0: 0, y1: 1,
                 line: { color: "#c00", width: 2 } }],
    };
    rows.forEach((column, i) => {
      const axis = i === 0 ? "y" : "y" + (i + 1);
      traces.push({ x: episode.step.map(at), y: series(episode, column), mode: "lines",
                    name: partner ? episode.controller : label(column), legendgroup: "shown",
                    showlegend: i === 0, line: { color: "#1f77b4" }, xaxis: "x", yaxis: axis });
      if (partner) {
        traces.push({ x: partner.step.map(at), y: series(partner, column), mode: "lines",
                      name: partner.controller, legendgroup: "partner", showlegend: i === 0,
                      line: { color: "#ff7f0e", dash: "dot" }, xaxis: "x", yaxis: axis });
      }
      const name = bare(column);
      const target = data.targets[name];
      if (column.startsWith(STATE) && target && episode.values[STATE + target]) {
        traces.push({ x: episode.step.map(at), y: episode.values[STATE + target], mode: "lines",
                      name: `set point (${target})`, line: { dash: "dash", color: "black" },
                      showlegend: false, xaxis: "x", yaxis: axis });
      }
      for (const edge of (column.startsWith(STATE) && data.limits[name]) || []) {
        if (edge === null) continue;  // a constraint limit: the runaway temperature
        layout.shapes.push({ type: "line", xref: "paper", yref: axis, x0: 0, x1: 1, y0: edge,
                             y1: edge, line: { color: "#c00", dash: "dash", width: 1 } });
      }
      const top = 1 - i * (h + gap);
      layout[i === 0 ? "yaxis" : "yaxis" + (i + 1)] = {
        domain: [Math.max(0, top - h), top], title: { text: label(column), font: { size: 11 } },
      };
    });
    Plotly.react("player", traces, layout, { displaylogo: false });
    const slider = $("step-slider");
    slider.max = episode.step.length - 1;
    setStep(0);
  }

  function setStep(index) {
    if (!episode) return;
    step = Math.max(0, Math.min(episode.step.length - 1, index));
    $("step-slider").value = step;
    $("step-label").textContent = episode.step[step];
    const now = at(episode.step[step]);
    Plotly.relayout("player", { "shapes[0].x0": now, "shapes[0].x1": now });
    const cells = [["step", episode.step[step]], ["reward", episode.reward[step]]];
    if (perStep !== 1) cells.splice(1, 0, [data.time.title, +now.toPrecision(6)]);
    for (const column of Object.keys(episode.values).sort()) cells.push([label(column), episode.values[column][step]]);
    $("step-table").innerHTML = cells.map(([k, v]) =>
      `<tr><th>${k}</th><td data-name="${k}">${v === null || v === undefined ? "" : +(+v).toPrecision(6)}</td></tr>`).join("");
    drawStep();
  }

  function stateAt(index) {
    const states = {};
    for (const [column, values] of Object.entries(episode.values)) {
      if (column.startsWith(STATE)) states[bare(column)] = values[index];
    }
    return states;
  }

  function drawStep() {
    const states = stateAt(step);
    if (typeof draw === "function") {
      try { $("drawing").innerHTML = draw(states, data.ranges); return; } catch (err) {
        $("drawing").textContent = `the simulator's drawing failed: ${err}`; return;
      }
    }
    $("drawing").innerHTML = data.states.map((name) => {
      const range = data.ranges[name], value = states[name];
      const f = range && value !== null ? Math.max(0, Math.min(1, (value - range[0]) / (range[1] - range[0]))) : 0;
      return `<div class="gauge"><span>${label(STATE + name)}</span><div class="bar"><div class="fill" style="width:${(100 * f).toFixed(1)}%"></div></div>` +
        `<span>${value === null || value === undefined ? "" : +(+value).toPrecision(5)}</span></div>`;
    }).join("") + "<p class='note'>gauges: each observed state within its range (the simulator has no drawing)</p>";
  }

  for (const id of ["filter-phase", "filter-controller", "filter-lesson", "filter-terminated"]) {
    $(id).addEventListener("change", refreshList);
  }
  for (const id of ["filter-scenario", "filter-return"]) $(id).addEventListener("input", refreshList);
  $("episode-list").addEventListener("change", (event) => show(event.target.value));
  $("step-slider").addEventListener("input", (event) => setStep(+event.target.value));
  document.addEventListener("keydown", (event) => {
    if (!episode || ["INPUT", "SELECT"].includes(document.activeElement.tagName)) return;
    if (event.key === "ArrowRight") setStep(step + 1);
    if (event.key === "ArrowLeft") setStep(step - 1);
  });
  refreshList();
  if ($("player").on) {  // Plotly adds .on to the div once a plot is drawn
    $("player").on("plotly_click", (event) =>
      setStep(episode.step.indexOf(Math.round(event.points[0].x / perStep))));
  }
})();
