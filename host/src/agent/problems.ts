// The last warnings and errors of the agent, for `tether status`: a logger wrapper that records every warn/error
// line it writes (component, and message with the reason its fields carry) in a bounded ring. Owns the ring; the log
// file stays the full record.
import type { Logger } from '../log.js';
import { type LoggedError, problemMessage } from '../model.js';

export class ProblemRing {
  private readonly items: LoggedError[] = [];

  constructor(private readonly size = 20) {}

  list(): LoggedError[] {
    return [...this.items];
  }

  record(component: string, msg: string): void {
    this.items.push({ time: new Date().toISOString(), component, msg });
    if (this.items.length > this.size) this.items.shift();
  }

  /**
   * A logger that behaves like `log` and also records its warn/error/fatal lines, and so do its children (under the
   * component they bind, if any): modules that make their own children (mounts, SFTP, watch) report here too.
   */
  tap(log: Logger, component: string): Logger {
    const wrapped = Object.create(log) as Logger;
    wrapped.child = ((bindings: Record<string, unknown>, options?: object) => {
      const child = log.child(bindings, options);
      return this.tap(child, typeof bindings.component === 'string' ? bindings.component : component);
    }) as unknown as Logger['child'];
    for (const level of ['warn', 'error', 'fatal'] as const) {
      const original = log[level].bind(log) as (...args: unknown[]) => void;
      (wrapped as unknown as Record<string, unknown>)[level] = (...args: unknown[]) => {
        if (log.isLevelEnabled(level)) this.record(component, messageOf(args));
        original(...args);
      };
    }
    return wrapped;
  }
}

function messageOf(args: unknown[]): string {
  const [first, second] = args;
  if (typeof first === 'string') return first;
  if (typeof second === 'string') return problemMessage(second, first);
  if (first instanceof Error) return first.message;
  return JSON.stringify(first) ?? '';
}
