// The characters a terminal or a reader of the log acts on instead of showing: C0 and C1 controls, and the Unicode
// bidirectional controls that reorder what follows them (a process named `\u202eexe.sh` shows as `hs.exe`). tether
// shows each as an escape (`\x1b`, `\u202e`). Text from the guest goes through guestText before anything logs or
// prints it; the CLI's own output through cli/terminal.ts.

/** The bidirectional controls (ALM, LRM, RLM, the embeddings and overrides, the isolates). */
const BIDI = '\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069';

export const TERMINAL_CONTROL = new RegExp(`[\\u0000-\\u0008\\u000b-\\u001f\\u007f-\\u009f${BIDI}]`, 'g');
const GUEST_UNSAFE = new RegExp(`[\\u0000-\\u001f\\u007f-\\u009f\\u2028\\u2029${BIDI}]`, 'g');
const LINE_BREAKS = /[\n\r\t]+/g;
/** What JSON.stringify leaves raw that a terminal acts on (it escapes C0 itself). */
export const JSON_RAW_CONTROL = new RegExp(`[\\u007f-\\u009f${BIDI}]`, 'g');

/** `\x1b` for a control below U+0100, `\u202e` above. */
export function escapeChar(c: string): string {
  const code = c.charCodeAt(0);
  return code < 0x100 ? `\\x${code.toString(16).padStart(2, '0')}` : `\\u${code.toString(16).padStart(4, '0')}`;
}

/**
 * A string the guest supplies (hostname, kernel release, a process's command line) as one inert line: line breaks
 * and tabs become a space (a `python3 -c "…"` command line spans lines), every other control an escape. A guest must
 * not forge a line of the host's log or of `up`'s output.
 */
export function guestText(text: string): string {
  GUEST_UNSAFE.lastIndex = 0;
  if (!GUEST_UNSAFE.test(text)) return text;
  return text.replace(LINE_BREAKS, ' ').replace(GUEST_UNSAFE, escapeChar);
}
