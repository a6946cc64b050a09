// Turns zod failures into ValidationErrors that name the first bad field.
import type { z } from 'zod';
import { ValidationError } from './errors.js';

export function validate<S extends z.ZodType>(schema: S, value: unknown, what: string): z.infer<S> {
  const r = schema.safeParse(value);
  if (r.success) return r.data;
  const issue = r.error.issues[0];
  throw new ValidationError(what, issue.path.map(String).join('.'), issue.message);
}
