// The CSTR at one step, for the viewer's episode player: the reactor vessel coloured by its
// temperature T, the cooling jacket by the coolant temperature Tc (blue cold, red hot, over
// the observation ranges), and a bar of Ca against its set point Cref.
function draw(states, ranges) {
  function colour(value, range) {
    const f = Math.max(0, Math.min(1, (value - range[0]) / (range[1] - range[0])));
    return `rgb(${Math.round(40 + 215 * f)},${Math.round(90 + 40 * (1 - Math.abs(2 * f - 1)))},${Math.round(255 - 215 * f)})`;
  }
  const T = states.T, Tc = states.Tc, Ca = states.Ca, Cref = states.Cref;
  const ca = ranges.Ca || [0, 10];
  const y = (c) => 190 - 170 * Math.max(0, Math.min(1, (c - ca[0]) / (ca[1] - ca[0])));
  const runaway = T > 400 ? '<text x="110" y="215" fill="#b00" font-size="13" text-anchor="middle">thermal runaway (T > 400 K)</text>' : "";
  return `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 300 225" width="300" height="225" role="img" aria-label="CSTR at this step">
  <rect x="20" y="20" width="180" height="170" rx="24" fill="${colour(Tc, ranges.Tc || [273, 373])}" stroke="#333"/>
  <rect x="40" y="40" width="140" height="130" rx="16" fill="${colour(T, ranges.T || [270, 430])}" stroke="#333"/>
  <text x="110" y="100" font-size="14" text-anchor="middle">T ${T.toFixed(1)} K</text>
  <text x="110" y="120" font-size="12" text-anchor="middle">jacket Tc ${Tc.toFixed(1)} K</text>
  <rect x="240" y="20" width="30" height="170" fill="#eee" stroke="#333"/>
  <rect x="240" y="${y(Ca)}" width="30" height="${190 - y(Ca)}" fill="#4a7"/>
  <line x1="232" x2="278" y1="${y(Cref)}" y2="${y(Cref)}" stroke="#000" stroke-width="2" stroke-dasharray="4 2"/>
  <text x="255" y="14" font-size="11" text-anchor="middle">Ca ${Ca.toFixed(2)}</text>
  <text x="255" y="205" font-size="11" text-anchor="middle">Cref ${Cref.toFixed(2)}</text>
  ${runaway}
</svg>`;
}
