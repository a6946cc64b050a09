// What `tether logs` shows of one log record in its pretty form. The message already says most of what its fields
// carry (the forward, its addresses and state, the socket): those fields are left out of the line's tail, so that
// it shows only what the message does not. An error whose message the line already quotes is left out too; `--json`
// keeps every field. The message is one line.

/** Fields pino-pretty places itself (time, level) or the format prints before the message. */
const SHOWN = new Set(['level', 'time', 'msg', 'component', 'pid', 'hostname']);
const LINE_BREAKS = /[\r\n]+/g;

/** `record` without the fields its message already says, its message on one line. */
export function prettyRecord(record: Record<string, unknown>): Record<string, unknown> {
  const msg = typeof record.msg === 'string' ? record.msg.replace(LINE_BREAKS, ' ') : record.msg;
  const text = typeof msg === 'string' ? msg : '';
  const out: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(record)) {
    if (SHOWN.has(key)) out[key] = key === 'msg' ? msg : value;
    else if (!saidIn(text, value)) out[key] = value;
  }
  return out;
}

function saidIn(text: string, value: unknown): boolean {
  if (value === null || value === undefined) return true;
  if (typeof value === 'string') return value === '' || text.includes(value);
  if (Array.isArray(value)) return value.every((v) => typeof v === 'string' && text.includes(v));
  // An error logged as an object: its message quoted by the line (its stack stays in the JSON).
  if (typeof value === 'object' && typeof (value as { message?: unknown }).message === 'string')
    return text.includes((value as { message: string }).message);
  return false;
}
