// Text the other side of the link chose (an agent name, an error message, an unknown event's name) made one inert
// line before anything logs, stores or prints it: line breaks become spaces, every other control an escape (`\x1b`,
// `\u202e`), and a long text is cut. A peer must not forge a line of the log, of `status` or of a terminal.

/** The bidirectional controls (ALM, LRM, RLM, the embeddings and overrides, the isolates). */
export const BIDI = '\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069';

const UNSAFE = new RegExp(`[\\u0000-\\u001f\\u007f-\\u009f\\u2028\\u2029${BIDI}]`, 'g');
const LINE_BREAKS = /[\n\r\t]+/g;

/** `\x1b` for a control below U+0100, `\u202e` above. */
export function escapeChar(c: string): string {
  const code = c.charCodeAt(0);
  return code < 0x100 ? `\\x${code.toString(16).padStart(2, '0')}` : `\\u${code.toString(16).padStart(4, '0')}`;
}

/**
 * `text` as one inert line, cut to `maxChars` (with how long it was) when given. A `python3 -c "…"` command line
 * spans lines; its breaks and tabs become a space.
 */
export function remoteText(text: string, maxChars?: number): string {
  const cut =
    maxChars !== undefined && text.length > maxChars ? `${text.slice(0, maxChars)}… (${text.length} characters)` : text;
  UNSAFE.lastIndex = 0;
  if (!UNSAFE.test(cut)) return cut;
  return cut.replace(LINE_BREAKS, ' ').replace(UNSAFE, escapeChar);
}
