// A minimal JSON-lines logger for the guest (stdout → journald). Owns levels, bindings and line format; the guest
// ships without pino, so this stays tiny: one object per line with `time`, `level`, `component`, `msg` and fields.

export type LogLevel = 'debug' | 'info' | 'warn' | 'error' | 'silent';
type LogFields = Record<string, unknown>;
type LogSink = (line: string) => void;
interface LogFn {
  (msg: string): void;
  (fields: LogFields, msg: string): void;
}

const RANK: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40, silent: 100 };

export function isLogLevel(s: string): s is LogLevel {
  return Object.hasOwn(RANK, s);
}

export class Logger {
  constructor(
    private readonly level: LogLevel = 'info',
    private readonly bindings: LogFields = {},
    private readonly sink: LogSink = (line) => process.stdout.write(line),
  ) {}

  child(bindings: LogFields): Logger {
    return new Logger(this.level, { ...this.bindings, ...bindings }, this.sink);
  }

  enabled(level: LogLevel): boolean {
    return RANK[level] >= RANK[this.level] && level !== 'silent';
  }

  // pino's argument order, as the host agent's logger: fields first when there are any.
  readonly debug: LogFn = (fieldsOrMsg: LogFields | string, msg?: string) => this.write('debug', fieldsOrMsg, msg);
  readonly info: LogFn = (fieldsOrMsg: LogFields | string, msg?: string) => this.write('info', fieldsOrMsg, msg);
  readonly warn: LogFn = (fieldsOrMsg: LogFields | string, msg?: string) => this.write('warn', fieldsOrMsg, msg);
  readonly error: LogFn = (fieldsOrMsg: LogFields | string, msg?: string) => this.write('error', fieldsOrMsg, msg);

  private write(level: LogLevel, fieldsOrMsg: LogFields | string, msg = ''): void {
    if (!this.enabled(level)) return;
    const fields = typeof fieldsOrMsg === 'string' ? undefined : fieldsOrMsg;
    if (typeof fieldsOrMsg === 'string') msg = fieldsOrMsg;
    const line = { time: new Date().toISOString(), level, ...this.bindings, msg, ...fields };
    this.sink(`${JSON.stringify(line, errorReplacer)}\n`);
  }
}

/** Errors have no enumerable fields; log their message (and code) instead of `{}`. */
function errorReplacer(_key: string, value: unknown): unknown {
  if (!(value instanceof Error)) return value;
  const code = (value as NodeJS.ErrnoException).code;
  return code ? { message: value.message, code } : { message: value.message };
}

/** A logger that drops everything (tests, one-shot commands). */
export const silentLogger = new Logger('silent');
