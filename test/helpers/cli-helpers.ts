// Running the built `tether` CLI (host/dist/cli/main.js, after `npx tsc -b`) as a child process with its own
// TETHER_HOME, collecting exit code and output, and the tether.yaml a test hands it. Owns nothing beyond the child it
// waits for.
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { stringify } from 'yaml';
import { type Testbed, type TestbedConfigParts, testbedConfigInput } from './testbed.js';

export const CLI = fileURLToPath(new URL('../../host/dist/cli/main.js', import.meta.url));

export function cliBuilt(): boolean {
  if (existsSync(CLI)) return true;
  if (process.env.CI === 'true') throw new Error(`${CLI} is missing: run \`npx tsc -b\` first`);
  console.warn(`skipping CLI tests: ${CLI} is missing (run \`npx tsc -b\`)`);
  return false;
}

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

export function runCli(
  home: string,
  args: string[],
  timeoutMs = 60_000,
  env: Record<string, string> = {},
  /** Gets the child once spawned (e.g. to signal it). */
  spawned?: (child: ChildProcess) => void,
): Promise<CliResult> {
  return runCliWith(home, args, { timeoutMs, env, spawned });
}

export interface CliRun {
  timeoutMs?: number;
  env?: Record<string, string>;
  spawned?: (child: ChildProcess) => void;
  cwd?: string;
  /** Written to the CLI's stdin, which is then closed (no input: stdin is /dev/null). */
  input?: string;
  /** Run as this user id (and its group id, without supplementary groups) instead of the test's own. */
  asUid?: number;
}

export function runCliWith(home: string, args: string[], run: CliRun = {}): Promise<CliResult> {
  const { timeoutMs = 60_000, env = {}, spawned, cwd, input, asUid } = run;
  const [cmd, argv] =
    asUid === undefined
      ? [process.execPath, [CLI, ...args]]
      : ['setpriv', [`--reuid=${asUid}`, `--regid=${asUid}`, '--clear-groups', process.execPath, CLI, ...args]];
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, argv, {
      env: { ...process.env, TETHER_HOME: home, TETHER_DEBUG: '', ...env },
      stdio: [input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'],
      cwd,
    });
    child.stdin?.end(input);
    spawned?.(child);
    let stdout = '';
    let stderr = '';
    child.stdout?.setEncoding('utf8').on('data', (c: string) => {
      stdout += c;
    });
    child.stderr?.setEncoding('utf8').on('data', (c: string) => {
      stderr += c;
    });
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(
        new Error(`tether ${args.join(' ')} did not finish in ${timeoutMs}ms; stdout: ${stdout} stderr: ${stderr}`),
      );
    }, timeoutMs);
    child.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.once('close', (code) => {
      clearTimeout(timer);
      resolve({ code: code ?? -1, stdout, stderr });
    });
  });
}

/** Writes a tether.yaml for the testbed guest at `path` (see testbedConfigInput) and returns the path. */
export function writeTestbedConfig(path: string, tb: Testbed, parts: TestbedConfigParts = {}): string {
  writeFileSync(path, stringify(testbedConfigInput(tb, parts)));
  return path;
}
