// The last warnings and errors of the agent, for `tether status`: a logger wrapper that records every warn/error
// line it writes (component, and message with the reason its fields carry) in a bounded ring, and marks one resolved
// when a later line shows its subject healthy again (problem-subjects.ts). Owns the ring; the log file stays the full
// record.
import type { Logger } from '../log.js';
import { type LoggedError, problemMessage } from '../model.js';
import { addProblem, problemSubject, settle } from '../problem-subjects.js';

interface Problem extends LoggedError {
  subject: string;
}

type Fields = Record<string, unknown>;

export class ProblemRing {
  private readonly items: Problem[] = [];

  constructor(private readonly size = 20) {}

  list(): LoggedError[] {
    return this.items.map(({ subject: _, ...problem }) => problem);
  }

  record(component: string, msg: string, fields: Fields = {}): void {
    const time = new Date().toISOString();
    addProblem(
      this.items,
      { time, component, msg, resolvedAt: null, subject: problemSubject(component, fields) },
      this.size,
    );
  }

  /** Marks the open problems that a line of `component` with `fields` shows to be over. */
  observe(component: string, fields: Fields): void {
    if (typeof fields.state !== 'string') return;
    const now = new Date().toISOString();
    for (const p of this.items) settle(p, component, fields, now);
  }

  /**
   * A logger that behaves like `log` and also records its warn/error/fatal lines, and so do its children (under the
   * component and bindings they add, if any): modules that make their own children (mounts, SFTP, watch) report here
   * too. Its info lines are looked at for the state changes that settle earlier problems.
   */
  tap(log: Logger, component: string, bindings: Fields = {}): Logger {
    // A pino logger's methods are overloaded generics that no plain function satisfies: the wrappers below take and
    // pass on whatever arguments pino takes, so they are typed loosely and cast to pino's own signatures.
    const wrapped = Object.create(log) as Logger;
    wrapped.child = ((childBindings: Fields, options?: object) => {
      const child = log.child(childBindings, options);
      const name = typeof childBindings.component === 'string' ? childBindings.component : component;
      return this.tap(child, name, { ...bindings, ...childBindings });
    }) as unknown as Logger['child'];
    for (const level of ['info', 'warn', 'error', 'fatal'] as const) {
      const original = log[level].bind(log) as (...args: unknown[]) => void;
      (wrapped as unknown as Record<string, unknown>)[level] = (...args: unknown[]) => {
        if (log.isLevelEnabled(level)) {
          const fields = { ...bindings, ...fieldsOf(args) };
          this.observe(component, fields);
          if (level !== 'info') this.record(component, messageOf(args), fields);
        }
        original(...args);
      };
    }
    return wrapped;
  }
}

function fieldsOf(args: unknown[]): Fields {
  const [first] = args;
  return typeof first === 'object' && first !== null && !(first instanceof Error) ? (first as Fields) : {};
}

function messageOf(args: unknown[]): string {
  const [first, second] = args;
  if (typeof first === 'string') return first;
  if (typeof second === 'string') return problemMessage(second, first);
  if (first instanceof Error) return first.message;
  return JSON.stringify(first) ?? '';
}
