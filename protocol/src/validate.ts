// Turns zod failures into ValidationErrors that name the first bad field and quote (a short preview of) its value.
import type { z } from 'zod';
import { ValidationError } from './errors.js';
import { remoteText } from './remote-text.js';

/** Longest value preview in an error: enough to recognise the value, too short to flood a log line. */
const PREVIEW_CHARS = 64;

export function validate<S extends z.ZodType>(schema: S, value: unknown, what: string): z.infer<S> {
  const r = schema.safeParse(value);
  if (r.success) return r.data;
  const issue = r.error.issues[0];
  const got = preview(valueAt(value, issue.path));
  // The path, an unrecognised key's message and the value are the other side's own text.
  const message = remoteText(issue.message, PREVIEW_CHARS * 2);
  throw new ValidationError(
    what,
    remoteText(issue.path.map(String).join('.'), PREVIEW_CHARS),
    got ? `${message} (got ${remoteText(got)})` : message,
  );
}

function valueAt(value: unknown, path: readonly PropertyKey[]): unknown {
  let v = value;
  for (const key of path) {
    if (v === null || typeof v !== 'object' || !Object.hasOwn(v, key)) return undefined;
    v = (v as Record<PropertyKey, unknown>)[key];
  }
  return v;
}

/** A one-line preview of a scalar value; objects and arrays are described by their kind only. */
function preview(v: unknown): string | null {
  if (v === undefined) return null;
  if (typeof v === 'string') {
    const shown = JSON.stringify(v.slice(0, PREVIEW_CHARS));
    return v.length > PREVIEW_CHARS ? `${shown}… (${v.length} characters)` : shown;
  }
  if (typeof v === 'number' || typeof v === 'boolean' || v === null) return String(v);
  if (typeof v === 'bigint') return `${v}n`;
  if (v instanceof Uint8Array) return `${v.byteLength} bytes`;
  if (Array.isArray(v)) return `an array of ${v.length}`;
  return typeof v;
}
