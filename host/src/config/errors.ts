// The error a config file that cannot be used raises, apart from the loader so that code reporting it (the CLI's
// error printer) does not load YAML and schema validation to recognise it.

/** One problem in a config file; `message` is the full one-line description. */
export interface ConfigProblem {
  path: string;
  line: number | null;
  column: number | null;
  message: string;
}

export class ConfigError extends Error {
  constructor(
    readonly file: string,
    readonly problems: ConfigProblem[],
  ) {
    super(problems.map((p) => p.message).join('\n'));
    this.name = 'ConfigError';
  }
}
