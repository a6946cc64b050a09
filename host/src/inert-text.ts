// The characters a terminal or a reader of the log acts on instead of showing: C0 and C1 controls, and the Unicode
// bidirectional controls that reorder what follows them (a process named `\u202eexe.sh` shows as `hs.exe`). tether
// shows each as an escape (`\x1b`, `\u202e`). Text from the guest goes through guestText before anything logs or
// prints it; the CLI's own output through cli/terminal.ts.

import { BIDI, escapeChar, remoteText } from '@tether/protocol';

export { escapeChar };

export const TERMINAL_CONTROL = new RegExp(`[\\u0000-\\u0008\\u000b-\\u001f\\u007f-\\u009f${BIDI}]`, 'g');
/** What JSON.stringify leaves raw that a terminal acts on (it escapes C0 itself). */
export const JSON_RAW_CONTROL = new RegExp(`[\\u007f-\\u009f${BIDI}]`, 'g');

/**
 * A string the guest supplies (hostname, kernel release, a process's command line) as one inert line: line breaks
 * and tabs become a space (a `python3 -c "…"` command line spans lines), every other control an escape. A guest must
 * not forge a line of the host's log or of `up`'s output. One parameter, so that it maps over an array as it is
 * (remoteText's second would take the index as its length limit).
 */
export function guestText(text: string): string {
  return remoteText(text);
}
