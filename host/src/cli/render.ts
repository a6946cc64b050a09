// Turning the control API's views into what a terminal shows: tables (cli-table3), the `forward ls --json` contract
// objects, human sizes and ages. No I/O.
import Table from 'cli-table3';
import { FORWARD_JSON_KEYS, type ForwardView, type LoggedError, type MountView, type StatusView } from '../model.js';
import { inert } from './terminal.js';

/** A forward as `forward ls --json` prints it: exactly FORWARD_JSON_KEYS, in that order. */
export function forwardJson(f: ForwardView): Record<(typeof FORWARD_JSON_KEYS)[number], unknown> {
  return Object.fromEntries(FORWARD_JSON_KEYS.map((k) => [k, f[k]])) as Record<
    (typeof FORWARD_JSON_KEYS)[number],
    unknown
  >;
}

/** How a table may fit a terminal: its width, and the columns that give up room for it, first to last. */
export interface TableFit {
  width: number;
  shrink: number[];
}

/** Narrower than this a shrunk column would say nothing. */
const MIN_SHRUNK = 16;
const GAP = 2;

/**
 * A borderless table, like `docker ps`. With `fit` (a terminal), rows longer than its width are cut in the columns
 * `fit.shrink` names (the long free text: a process's command line, an error), each to no less than MIN_SHRUNK;
 * `--json` has them whole.
 */
export function table(head: string[], rows: string[][], fit?: TableFit): string {
  const t = new Table({
    head,
    chars: {
      top: '',
      'top-mid': '',
      'top-left': '',
      'top-right': '',
      bottom: '',
      'bottom-mid': '',
      'bottom-left': '',
      'bottom-right': '',
      left: '',
      'left-mid': '',
      mid: '',
      'mid-mid': '',
      right: '',
      'right-mid': '',
      middle: ' '.repeat(GAP),
    },
    style: { head: [], border: [], 'padding-left': 0, 'padding-right': 0 },
  });
  // A cell is one line: the newlines and tabs of a guest command line (`python3 -c "…"`) are spaces; other control
  // characters are shown as \xNN, as everywhere else the CLI prints.
  const cells = rows.map((row) => row.map((cell) => inert(cell.replace(LINE_BREAKS, ' '))));
  t.push(...(fit ? fitted(head, cells, fit) : cells));
  // The last column is not padded out to its widest cell.
  return t
    .toString()
    .split('\n')
    .map((line) => line.trimEnd())
    .join('\n');
}

/** `rows` with the cells of `fit.shrink` columns cut so that every line fits `fit.width`. */
function fitted(head: string[], rows: string[][], fit: TableFit): string[][] {
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]?.length ?? 0)));
  let over = widths.reduce((a, b) => a + b, 0) + GAP * (head.length - 1) - fit.width;
  for (const i of fit.shrink) {
    if (over <= 0) break;
    const give = Math.max(0, Math.min(over, widths[i] - Math.max(MIN_SHRUNK, head[i].length)));
    widths[i] -= give;
    over -= give;
  }
  return rows.map((row) => row.map((cell, i) => truncate(cell, widths[i])));
}

const LINE_BREAKS = /[\n\t\r]+/g;

function formatBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let v = n / 1024;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v < 10 ? v.toFixed(1) : Math.round(v)} ${units[i]}`;
}

/** `5s ago`, `3m ago`, `2h ago`, `4d ago`. */
function formatAge(iso: string, now = Date.now()): string {
  const t = Date.parse(iso);
  if (Number.isNaN(t)) return '-';
  const s = Math.max(0, Math.round((now - t) / 1000));
  if (s < 60) return `${s}s ago`;
  if (s < 3600) return `${Math.floor(s / 60)}m ago`;
  if (s < 86_400) return `${Math.floor(s / 3600)}h ago`;
  return `${Math.floor(s / 86_400)}d ago`;
}

/** `width`: the terminal's, to fit the rows to (a pipe gets them whole, the command line cut at 40 characters). */
export function forwardTable(forwards: ForwardView[], width?: number): string {
  const anyError = forwards.some((f) => f.error);
  const head = ['PROTO', 'GUEST', 'HOST', 'STATE', 'PROCESS', 'CONN', 'IN', 'OUT', 'SINCE'];
  if (anyError) head.push('ERROR');
  const rows = forwards.map((f) => {
    const row = [
      f.proto,
      f.guestAddr,
      f.hostAddrs.join(', ') || '-',
      f.state,
      // pid 0: no process holds the port, the guest kernel answers it (a DNAT rule).
      f.process ? `${f.process.pid || 'kernel'} ${width ? f.process.command : truncate(f.process.command, 40)}` : '-',
      String(f.connections),
      formatBytes(f.bytesIn),
      formatBytes(f.bytesOut),
      formatAge(f.since),
    ];
    if (anyError) row.push(f.error ?? '');
    return row;
  });
  // The error, then the process's command line, give up room first.
  const process = head.indexOf('PROCESS');
  return table(head, rows, width ? { width, shrink: anyError ? [head.length - 1, process] : [process] } : undefined);
}

export function mountTable(mounts: MountView[], width?: number): string {
  const anyError = mounts.some((m) => m.error);
  const head = ['LOCATION', 'MOUNTPOINT', 'DRIVER', 'MODE', 'STATE', 'INOTIFY', 'SINCE'];
  if (anyError) head.push('ERROR');
  return table(
    head,
    mounts.map((m) => {
      const row = [
        m.location,
        m.guestPath && m.guestPath !== m.mountPoint ? `${m.mountPoint} (${m.guestPath})` : m.mountPoint,
        m.driver,
        m.writable ? 'rw' : 'ro',
        m.state,
        m.inotify,
        formatAge(m.since),
      ];
      if (anyError) row.push(m.error ?? '');
      return row;
    }),
    width && anyError ? { width, shrink: [head.length - 1] } : undefined,
  );
}

/** `~ → /home/me: mounted (rw, inotify watching)`, with the reason when there is one. */
function mountLine(m: MountView): string {
  const where = m.guestPath && m.guestPath !== m.mountPoint ? `${m.mountPoint} (${m.guestPath})` : m.mountPoint;
  const mode = `${m.writable ? 'rw' : 'ro'}, inotify ${m.inotify}`;
  return `${m.location} → ${where}: ${m.state} (${mode})${m.error ? `: ${m.error}` : ''}`;
}

/** `1 forward`, `3 forwards`. */
export function countOf(n: number, noun: string): string {
  return `${n} ${noun}${n === 1 ? '' : 's'}`;
}

/** `3 (2 forwarding, 1 conflict)` from a per-state count. */
function summarizeCounts(counts: Record<string, number> & { total: number }): string {
  const parts = stateCounts(counts);
  return parts.length > 0 ? `${counts.total} (${parts.join(', ')})` : String(counts.total);
}

/** The states that have any, with their counts: `1 forwarding`, `2 ignored`. */
export function stateCounts(counts: Record<string, number>): string[] {
  return Object.entries(counts)
    .filter(([k, v]) => k !== 'total' && k !== 'capped' && v > 0)
    .map(([k, v]) => `${v} ${k}`);
}

/** Guest listeners maxForwards leaves out, as status and doctor say it. */
export function cappedListeners(n: number): string {
  return `${n} more guest listener${n > 1 ? 's' : ''} over maxForwards, not forwarded or listed`;
}

/**
 * `notes`, shown under the agent's line: why it is not this command's build of tether (otherBuild), and that
 * tether.yaml was edited since it started (served-config.ts).
 */
export function statusText(
  s: StatusView,
  notes: { staleBuild?: string | null; configEdited?: string | null } = {},
): string {
  const lines = [
    `instance:     ${s.name}`,
    `state:        ${s.state}`,
    `agent:        pid ${s.pid}, up since ${s.startedAt} (${formatAge(s.startedAt)})`,
    ...(notes.staleBuild
      ? [`              ! ${notes.staleBuild}; \`tether down ${s.name} && tether up ${s.name}\` runs this one`]
      : []),
    ...(notes.configEdited ? [`              ! ${notes.configEdited}`] : []),
    `ssh:          ${s.ssh.target} ${s.ssh.state} (since ${formatAge(s.ssh.since)}), ${s.ssh.reconnects} reconnects` +
      (s.ssh.lastError ? `, last error: ${s.ssh.lastError}` : ''),
  ];
  if (s.guest) {
    const g = s.guest;
    lines.push(
      `guest agent:  ${g.version}${g.build ? ` (build ${g.build})` : ''} pid ${g.agentPid} on ${g.hostname} (${g.arch}, kernel ${g.kernel}), ` +
        `scan every ${Math.round(g.scanIntervalMs)} ms${g.listenEvents?.on ? ' and on listen events' : ''}, ${g.listeners} listeners`,
    );
    if (s.link?.outdated) lines.push(`              ! ${s.link.outdated}`);
  } else if (s.link?.guestStopping) {
    lines.push(`guest agent:  not connected: ${s.link.guestStopping}; waiting for it to come back`);
  } else if (s.link?.provisioning) {
    const step = s.link.provisionStep ? ` (${s.link.provisionStep})` : '';
    lines.push(`guest agent:  not connected: the host agent is installing or starting it now${step}`);
  } else {
    const why = linkDownReason(s.link);
    lines.push(`guest agent:  not connected${why ? ` (${why})` : ''}${restartNote(s.link)}`);
  }
  const capped = s.forwards.capped ? `; ${cappedListeners(s.forwards.capped)}` : '';
  lines.push(`forwards:     ${summarizeCounts(s.forwards)}${capped}`, `mounts:       ${summarizeCounts(s.mounts)}`);
  for (const m of s.mountStates ?? []) lines.push(`  ${mountLine(m)}`);
  // Met once, at the start: what holds now is in the lines above.
  lines.push('requirements (at the start):');
  for (const r of s.requirements)
    lines.push(
      `  ${requirementMark(r.state)} ${r.index}/${r.total} ${r.name}: ${r.state}${r.detail ? ` (${r.detail})` : ''}`,
    );
  if (s.lastErrors.length > 0) {
    lines.push('last errors:');
    for (const e of s.lastErrors) lines.push(problemLine(e));
  }
  lines.push(`log:          ${s.logFile}`);
  return lines.join('\n');
}

/**
 * Why the link to the guest agent is down: its last error and, when the host agent's last try to start the guest
 * agent failed, that failure (what to fix), each once.
 */
export function linkDownReason(link: StatusView['link'] | undefined): string | null {
  const failed = link?.provisionError;
  if (!failed || link?.lastError?.includes(failed)) return link?.lastError ?? null;
  return `${link?.lastError ? `${link.lastError}; ` : ''}starting it failed: ${failed}`;
}

/** When the host agent starts the guest agent again, for a link that is down; empty when it will not by itself. */
function restartNote(link: StatusView['link'] | undefined): string {
  if (!link?.restartAt) return '';
  const inS = Math.ceil((Date.parse(link.restartAt) - Date.now()) / 1000);
  return `; the host agent starts it again ${inS > 0 ? `in ${inS} s` : 'now'}`;
}

/** One entry of `last errors:`; one the agent has since recovered from says when. */
export function problemLine(e: LoggedError): string {
  const over = e.resolvedAt && `${e.resolution === 'removed' ? 'removed' : 'resolved'} ${e.resolvedAt}`;
  return `  ${e.time} [${e.component}] ${e.msg}${over ? ` (${over})` : ''}`;
}

function requirementMark(state: string): string {
  return state === 'ok' ? '✓' : state === 'failed' ? '✗' : state === 'skipped' ? '-' : '…';
}

function truncate(s: string, n: number): string {
  return s.length > n ? `${s.slice(0, n - 1)}…` : s;
}
