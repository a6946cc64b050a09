// Small statistics and reporting helpers shared by the benchmarks: medians, percentiles, ratio tables.

export function percentile(values, p) {
  if (values.length === 0) return Number.NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const idx = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[idx];
}

export const median = (values) => percentile(values, 50);

/** Runs `fn` `reps` times and returns the median of its numeric results. */
export async function medianOf(reps, fn) {
  const out = [];
  for (let i = 0; i < reps; i++) out.push(await fn(i));
  return median(out);
}

export function fmt(n, digits = 1) {
  if (!Number.isFinite(n)) return String(n);
  return n >= 100 ? n.toFixed(0) : n.toFixed(digits);
}

/**
 * Prints rows of { metric, unit, tether, anchor, goal } with the ratio tether/anchor, so every figure is read
 * against the anchor measured in the same run.
 */
export function printComparison(title, anchorName, rows) {
  console.log(`\n## ${title}  (anchor: ${anchorName}, same run, medians)`);
  const header = ['metric', 'tether', anchorName, 'ratio', 'goal'];
  const lines = rows.map((r) => [
    `${r.metric} (${r.unit})`,
    fmt(r.tether),
    r.anchor === undefined ? '-' : fmt(r.anchor),
    r.anchor === undefined ? '-' : `${(r.tether / r.anchor).toFixed(2)}x`,
    r.goal ?? '',
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...lines.map((l) => String(l[i]).length)));
  const row = (cells) => cells.map((c, i) => String(c).padEnd(widths[i])).join('  ');
  console.log(row(header));
  console.log(widths.map((w) => '-'.repeat(w)).join('  '));
  for (const l of lines) console.log(row(l));
}
