// `tether shell NAME [COMMAND...]`: a login shell (or one command) in the guest through OpenSSH's `ssh`, with the
// instance's connection settings and pinned host key (../../ssh/openssh-command.ts), starting where the host's
// working directory is mounted (../guest-workdir.ts). Works whether or not the host agent runs; passes on the
// remote command's exit status as `ssh` does.
import { spawn } from 'node:child_process';
import { realpathSync, writeFileSync } from 'node:fs';
import { constants } from 'node:os';
import { join } from 'node:path';
import type { Command } from 'commander';
import { ConfigError } from '../../config/errors.js';
import { closestKey, type LoadedConfig, loadConfig } from '../../config/load.js';
import { expandHome } from '../../config/paths.js';
import type { InstancePaths } from '../../instance.js';
import { readPinned } from '../../ssh/hostkey.js';
import { hostKeyAlias, knownHostsLine, opensshArgv } from '../../ssh/openssh-command.js';
import { loginShellCommand, shellQuote } from '../../ssh/shell-quote.js';
import { clientFor, existingInstance, withHelp } from '../context.js';
import { probeSsh } from '../doctor.js';
import { CliError, EXIT_USAGE, ExitStatus } from '../errors.js';
import { guestWorkdir } from '../guest-workdir.js';
import { complain } from '../terminal.js';

interface ShellOptions {
  workdir?: string;
}

/**
 * tether's own options between NAME and the command (`--workdir DIR`, `-h`), then the command: from its first word
 * on, every argument is the command's (`ls -h` is not tether's help). `--` ends tether's options. Any other word
 * starting with `-` before the command is a usage error (`problem`), not a command the guest's sh would reject.
 */
export function shellArgs(rest: readonly string[]): {
  workdir?: string;
  help: boolean;
  command: string[];
  problem?: string;
} {
  let workdir: string | undefined;
  let i = 0;
  for (; i < rest.length; i++) {
    const a = rest[i];
    if (a === '--') return { workdir, help: false, command: rest.slice(i + 1) };
    if (a === '-h' || a === '--help') return { workdir, help: true, command: [] };
    if (a === '--workdir') {
      if (i + 1 >= rest.length)
        return { help: false, command: [], problem: "option '--workdir <dir>' argument missing" };
      workdir = rest[++i];
    } else if (a.startsWith('--workdir=')) workdir = a.slice('--workdir='.length);
    else if (a.startsWith('-') && a !== '-') {
      const name = a.replace(/=.*/, '');
      const near = closestKey(name.replace(/^-+/, ''), ['workdir', 'help']);
      const hint = near ? `; did you mean --${near}?` : '; put -- before a command that starts with -';
      return { help: false, command: [], problem: `unknown option '${name}'${hint}` };
    } else break;
  }
  return { workdir, help: false, command: rest.slice(i) };
}

export function registerShell(program: Command): void {
  const cmd = withHelp(
    program
      .command('shell')
      .description(
        'open a login shell in the guest (or run COMMAND there) over ssh, starting in the guest path of the current directory when a mount holds it',
      )
      .argument('<name>', 'instance name')
      .argument('[command...]', 'a command and its arguments to run instead of the shell, each passed as one word')
      .option('--workdir <dir>', 'guest directory to start in (`~/x` for one under the guest home)')
      // Everything after NAME is read here (shellArgs), so that `ls -l` or `python3 --version` keep their options.
      .passThroughOptions(),
    [
      'tether shell dev',
      'tether shell dev uname -a',
      "tether shell dev -- sh -c 'ls | wc -l'",
      'tether shell dev --workdir /tmp',
    ],
  );
  cmd.action(async (name: string, rest: string[], opts: ShellOptions) => {
    const parsed = shellArgs(rest);
    if (parsed.problem) cmd.error(parsed.problem, { exitCode: EXIT_USAGE, code: 'tether.shellOption' });
    if (parsed.help) cmd.help();
    const { command } = parsed;
    const workdirAsked = parsed.workdir ?? opts.workdir;
    const paths = existingInstance(name);
    const config = await sshConfig(paths);
    const pinned = readPinned(paths.hostKey);
    if (!pinned)
      throw new CliError(`no host key is pinned for ${name} yet: \`tether up ${name}\` connects once and pins it`);
    const alias = hostKeyAlias(name);
    const knownHosts = join(paths.dir, 'known_hosts');
    writeFileSync(knownHosts, knownHostsLine(alias, pinned), { mode: 0o600 });
    const workdir = workdirAsked ? { dir: workdirAsked, required: true } : await mountedWorkdir(paths);
    const ssh = { ...config.ssh, identityFile: config.ssh.identityFile && expandHome(config.ssh.identityFile) };
    // As ssh does for a login shell; a command gets a terminal only when its output goes to one too, so that
    // `tether shell dev cat f | sha256sum` gets the file's bytes (a terminal would turn \n into \r\n).
    const tty = process.stdin.isTTY === true && (command.length === 0 || process.stdout.isTTY === true);
    const argv = opensshArgv({ ssh, knownHosts, alias, tty }, loginShellCommand(shellScript(workdir, command)));
    const code = await runSsh(argv);
    if (code === SSH_FAILED) {
      const why = await whySshFailed(paths, config);
      if (why) complain(why);
    }
    if (code !== 0) throw new ExitStatus(code);
  });
}

const WHY_PROBE_TIMEOUT_MS = 3_000;

/**
 * After ssh's own failure status: what a fresh connection finds wrong (doctor's SSH checks: reachable, the pinned host
 * key, the login), so the message names the cause instead of listing every possibility. OpenSSH's advice about the
 * known_hosts file it was given does not apply (tether writes that file from its pin at every run). Null when the
 * connection logs in: the 255 was the remote command's own status, or a failure that has passed.
 */
async function whySshFailed(paths: InstancePaths, config: LoadedConfig): Promise<string | null> {
  // ssh has waited its 10 s for a paused VM already: the look at what is wrong gets less.
  const { results, client } = await probeSsh(paths, config, false, WHY_PROBE_TIMEOUT_MS);
  client?.end();
  const failed = results.find((r) => r.state === 'fail');
  if (!failed) return null;
  return `tether: ssh exited ${SSH_FAILED}: ${failed.name}: ${failed.detail}${failed.fix ? `\n  fix: ${failed.fix}` : ''}\n`;
}

/** tether.yaml's SSH settings; when it does not load, those of the running agent (as `doctor` does). */
async function sshConfig(paths: InstancePaths): Promise<LoadedConfig> {
  try {
    return loadConfig(paths.config);
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    const served = await clientFor(paths, 5_000)
      .config()
      .catch(() => null);
    if (served) return served;
    throw err;
  }
}

/** The guest path of the host's working directory when a mount of the running agent holds it. */
async function mountedWorkdir(paths: InstancePaths): Promise<{ dir: string; required: false } | null> {
  const mounts = await clientFor(paths, 5_000)
    .mounts()
    .catch(() => []);
  const real = (p: string) => {
    try {
      return realpathSync(p);
    } catch {
      return p;
    }
  };
  let cwd: string;
  try {
    cwd = process.cwd();
  } catch {
    return null; // removed under the shell that runs tether: the guest home it is
  }
  const dir = guestWorkdir(
    real(cwd),
    mounts.map((m) => ({ ...m, location: real(m.location) })),
  );
  return dir ? { dir, required: false } : null;
}

/**
 * The POSIX sh script run in the guest: change directory (a mounted one quietly falls back to the home directory,
 * one asked for with --workdir must exist), then the command or the user's login shell.
 */
export function shellScript(workdir: { dir: string; required: boolean } | null, command: readonly string[]): string {
  const lines: string[] = [];
  if (workdir) {
    const { dir } = workdir;
    const target =
      dir === '~' ? '"$HOME"' : dir.startsWith('~/') ? `"$HOME"/${shellQuote(dir.slice(2))}` : shellQuote(dir);
    // cd's own complaint names neither tether nor the flag: one line that does, instead.
    const complain = `printf 'tether: --workdir %s: no such directory in the guest, or the SSH user may not enter it\\n' ${shellQuote(dir)} >&2`;
    lines.push(workdir.required ? `cd ${target} 2>/dev/null || { ${complain}; exit 1; }` : `cd ${target} 2>/dev/null`);
  }
  // sshd sets SHELL to the user's login shell (/bin/sh when the passwd entry names none). A command runs in it as a
  // login shell too, so that what its profile sets up (PATH with ~/.local/bin, nvm) is there, as in the shell.
  const run = command.length > 0 ? ` -c ${shellQuote(command.map(shellQuote).join(' '))}` : '';
  lines.push(`exec "$SHELL" -l${run}`);
  return lines.join('\n');
}

/** ssh's own exit status for its failures (connect, login, host key). */
const SSH_FAILED = 255;

/** Runs ssh on this terminal; resolves with its exit status (128 + the signal number when a signal ended it). */
function runSsh(argv: string[]): Promise<number> {
  return new Promise((resolve, reject) => {
    const child = spawn('ssh', argv, { stdio: 'inherit' });
    // The terminal's ^C and ^\ reach ssh too (same process group): it decides what they mean, not this process.
    const ignore = () => {};
    process.on('SIGINT', ignore).on('SIGQUIT', ignore);
    const done = () => process.off('SIGINT', ignore).off('SIGQUIT', ignore);
    child.once('error', (err: NodeJS.ErrnoException) => {
      done();
      reject(
        err.code === 'ENOENT'
          ? new CliError("`tether shell` runs OpenSSH's ssh client, which is not on PATH: install it (openssh-client)")
          : err,
      );
    });
    child.once('exit', (code, signal) => {
      done();
      resolve(code ?? 128 + (signal ? constants.signals[signal] : 0));
    });
  });
}
