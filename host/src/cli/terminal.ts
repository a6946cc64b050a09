// What the CLI prints, made inert for a terminal. Much of it comes from the guest (hostname, versions, process
// command lines, error text) or from files a user may not have written, and a control character in it would reach
// the operator's terminal as a command: retitle the window, clear the screen, recolour or hide the lines after it.
// Every write of the CLI goes through `say`/`complain` (text) or `sayJson` (JSON): the only control characters they
// let through are newline and tab; `forward ls --watch` writes its screen clear on its own.

import { escapeChar, JSON_RAW_CONTROL, TERMINAL_CONTROL } from '../inert-text.js';

/** `text` with each control character other than newline and tab shown as `\xNN` (a bidi control as `\uNNNN`). */
export function inert(text: string): string {
  return text.replace(TERMINAL_CONTROL, escapeChar);
}

/**
 * JSON text with DEL, the C1 controls and the bidi controls (which JSON.stringify leaves raw, unlike C0) escaped as
 * `\uNNNN`: the same JSON value, nothing a terminal acts on.
 */
export function inertJson(json: string): string {
  return json.replace(JSON_RAW_CONTROL, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

/** Every string inside `value` made inert (for records a formatter prints with colours of its own). */
export function inertValues(value: unknown): unknown {
  if (typeof value === 'string') return inert(value);
  if (Array.isArray(value)) return value.map(inertValues);
  if (value !== null && typeof value === 'object') {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [inert(k), inertValues(v)]));
  }
  return value;
}

/** The terminal's width when stdout is one (tables fit it); undefined for a pipe or a file. */
export function terminalWidth(): number | undefined {
  return process.stdout.isTTY ? process.stdout.columns || undefined : undefined;
}

export function say(text: string): void {
  process.stdout.write(inert(text));
}

export function complain(text: string): void {
  process.stderr.write(inert(text));
}

/** `value` as JSON on stdout (pretty with `indent`), one line per call when not indented. */
export function sayJson(value: unknown, indent?: number): void {
  process.stdout.write(`${inertJson(JSON.stringify(value, null, indent))}\n`);
}
