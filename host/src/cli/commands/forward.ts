// `tether forward ls|add|rm NAME`: the instance's forwards (one row per guest listener), runtime additions and
// removals. `ls --json` prints exactly FORWARD_JSON_KEYS per forward (the public contract).
import type { Command } from 'commander';
import { ipOfAddr, portOfAddr } from '../../address.js';
import type { ControlClient } from '../../control/client.js';
import { compareForwards, type ForwardView, waitsForGuestService } from '../../model.js';
import { clientFor, existingInstance, withHelp } from '../context.js';
import { CliError, UsageError } from '../errors.js';
import { matchForwards, PORT_SPEC_FORM, parsePortSpec, parseSocketSpec } from '../forward-spec.js';
import { cappedListeners, forwardJson, forwardTable } from '../render.js';
import { complain, inertJson, say, sayJson, terminalWidth } from '../terminal.js';

function render(forwards: ForwardView[], json: boolean): string {
  if (json) return inertJson(JSON.stringify(forwards.map(forwardJson), null, 2));
  if (forwards.length === 0) return 'no forwards (nothing listens in the guest yet)';
  return forwardTable(forwards, terminalWidth());
}

/** Redraws the table on every forward event (and every 2 s for counters) until Ctrl-C or the agent goes away. */
function watch(name: string, client: ControlClient, json: boolean): Promise<void> {
  const byId = new Map<string, ForwardView>();
  return new Promise<void>((resolve, reject) => {
    let pending = false;
    const draw = () => {
      pending = false;
      const list = [...byId.values()].sort(compareForwards);
      if (json) sayJson(list.map(forwardJson));
      else {
        // Local 24-hour time, as `tether logs` prints it (a locale's `11:19:53 PM` is not what the logs say).
        const header = `tether forward ls ${name} — ${new Date().toTimeString().slice(0, 8)} (Ctrl-C to quit)`;
        // A terminal is cleared for each redraw; a pipe or file gets the tables one after the other.
        const clear = process.stdout.isTTY ? '\x1b[H\x1b[2J' : '';
        process.stdout.write(clear);
        say(`${header}\n\n${render(list, false)}\n`);
      }
    };
    const schedule = () => {
      if (pending) return;
      pending = true;
      setTimeout(draw, 100);
    };
    const reload = () =>
      client.forwards().then((list) => {
        byId.clear();
        for (const f of list) byId.set(f.id, f);
        schedule();
      }, fail);
    const fail = (err: Error) => {
      clearInterval(refresh);
      sub.close();
      reject(new CliError(`watch ended: ${err.message}`));
    };
    const sub = client.events(
      (e) => {
        if (e.type === 'forward') byId.set(e.forward.id, e.forward);
        else if (e.type === 'forward-removed') byId.delete(e.id);
        else return;
        schedule();
      },
      (reason, stopped) => {
        if (!stopped) return fail(new Error(`the agent closed the event stream (${reason})`));
        clearInterval(refresh);
        complain(`tether: ${reason} (instance ${name})\n`);
        resolve();
      },
    );
    const refresh = setInterval(() => void reload(), 2_000);
    sub.opened.then(reload, fail);
    process.once('SIGINT', () => {
      clearInterval(refresh);
      sub.close();
      resolve();
    });
  });
}

export function registerForward(program: Command): void {
  const forward = withHelp(program.command('forward').description('port and socket forwards of an instance'), [
    'tether forward ls dev',
    'tether forward add dev 8080:80',
    'tether forward rm dev 8080',
  ]);
  registerLs(forward);
  registerAdd(forward);
  registerRm(forward);
}

function registerLs(forward: Command): void {
  withHelp(
    forward
      .command('ls')
      .alias('list')
      .description('list forwards: proto, guest address, host addresses, state, process, connections, bytes, since')
      .argument('<name>', 'instance name')
      .option(
        '--json',
        `print an array of objects with the keys proto, guestAddr, hostAddrs, state, process, connections, bytesIn, bytesOut, since, error`,
      )
      .option('--watch', 'redraw whenever a forward changes'),
    ['tether forward ls dev', 'tether forward ls dev --json', 'tether forward ls dev --watch'],
  ).action(async (name: string, opts: { json?: boolean; watch?: boolean }) => {
    const client = clientFor(existingInstance(name));
    if (opts.watch) return watch(name, client, opts.json === true);
    if (opts.json) return say(`${render(await client.forwards(), true)}\n`);
    const [list, status] = await Promise.all([client.forwards(), client.status()]);
    // Listeners over the cap have no row: without this line a port the guest serves would just be missing.
    const { capped } = status.forwards;
    const more = capped > 0 ? `\n${cappedListeners(capped)}: raise maxForwards in tether.yaml\n` : '';
    say(`${render(list, false)}\n${more}`);
  });
}

function registerAdd(forward: Command): void {
  withHelp(
    forward
      .command('add')
      .description('forward a host port to a guest port (or a guest unix socket to a host socket) until `down`')
      .argument('<name>', 'instance name')
      .argument(
        '[spec]',
        `${PORT_SPEC_FORM} (the same port on both sides); HOSTPORT:GUESTIP:GUESTPORT for a guest address other than its loopback`,
      )
      .option(
        '--socket <guest[:host]>',
        'forward the guest unix socket GUEST to the host socket path HOST (default: the file name of GUEST in the instance directory)',
      ),
    [
      'tether forward add dev 8080:80',
      'tether forward add dev 3000',
      'tether forward add dev 127.0.0.1:5353:53/udp',
      'tether forward add dev 8053:127.0.0.53:53',
      "tether forward add dev --socket /var/run/docker.sock   # host socket: the instance directory's docker.sock",
      'tether forward add dev --socket /var/run/docker.sock:~/docker.sock',
    ],
  ).action(async (name: string, spec: string | undefined, opts: { socket?: string }) => {
    if ((spec === undefined) === (opts.socket === undefined))
      throw new UsageError(`give either ${PORT_SPEC_FORM} or --socket GUEST:HOST`);
    const paths = existingInstance(name);
    const parsed = opts.socket ? parseSocketSpec(opts.socket, paths.dir) : parsePortSpec(spec!);
    const client = clientFor(paths);
    const f = await client.addForward(parsed);
    say(
      `added ${f.proto} ${f.hostAddrs.join(', ')} → guest ${f.guestAddr} (${f.state}${f.error ? `: ${f.error}` : ''})\n`,
    );
    if (parsed.proto !== 'unix' && !parsed.guestIP) say(guestHint(name, f, await client.forwards()));
    // Added, but it does not serve until someone acts (a conflict is retried by itself, a unix forward serves once
    // its guest service is up): a script must not go on.
    if ((f.state === 'error' && !waitsForGuestService(f)) || f.state === 'privileged')
      throw new CliError(
        `forward ${f.id} does not serve (${f.state}); it stays listed and serves once that is fixed, or \`tether forward rm ${name} ${rmArg(f)}\` removes it`,
      );
  });
}

/**
 * A line for a port added to the guest's loopback that the guest does not serve there: nothing listens on it yet (it
 * serves once something does, as `ssh -L` would), or only other addresses do (127.0.0.2, a container's address), and
 * the line names the spec that reaches them. Empty when something listens where the forward goes, or while the link
 * to the guest is down (nothing is known of its listeners then).
 */
function guestHint(name: string, f: ForwardView, all: readonly ForwardView[]): string {
  const guestPort = portOfAddr(f.guestAddr);
  const target = ipOfAddr(f.guestAddr);
  const reaches = (ip: string) => ip === target || ip === '::' || (ip === '0.0.0.0' && !target.includes(':'));
  const listeners = all.filter(
    (g) => g.source === 'detected' && g.proto === f.proto && portOfAddr(g.guestAddr) === guestPort,
  );
  if (listeners.length === 0) {
    if (f.state !== 'forwarding') return '';
    const what = f.proto === 'udp' ? 'datagrams to it go unanswered' : 'connections to it are reset';
    return `  nothing listens on guest port ${guestPort}${f.proto === 'udp' ? '/udp' : ''} yet: ${what} until something does\n`;
  }
  if (listeners.some((g) => reaches(ipOfAddr(g.guestAddr)))) return '';
  const other = ipOfAddr(listeners[0].guestAddr);
  const hostPort = portOfAddr(f.hostAddrs[0]) ?? guestPort;
  const spec = `${hostPort}:${other.includes(':') ? `[${other}]` : other}:${guestPort}${f.proto === 'udp' ? '/udp' : ''}`;
  return (
    `  the guest listens on ${listeners.map((g) => g.guestAddr).join(', ')}, not on ${f.guestAddr}: ` +
    `\`tether forward rm ${name} ${rmArg(f)}\` and \`tether forward add ${name} ${spec}\` reach it\n`
  );
}

/** What `forward rm` takes to name an added forward: its host socket path, or its host port. */
function rmArg(f: ForwardView): string {
  if (f.proto === 'unix') return f.hostAddrs[0] ?? f.guestAddr;
  const hostPort = f.hostAddrs.length > 0 ? portOfAddr(f.hostAddrs[0]) : portOfAddr(f.guestAddr);
  return `${hostPort}${f.proto === 'udp' ? '/udp' : ''}`;
}

/** The `forward add` that asks again for a detected forward that `forward rm` ignores. */
function readdHint(name: string, f: ForwardView): string {
  const guestPort = portOfAddr(f.guestAddr);
  const hostPort = f.hostAddrs.length > 0 ? portOfAddr(f.hostAddrs[0]) : guestPort;
  const spec = `${hostPort === guestPort ? guestPort : `${hostPort}:${guestPort}`}${f.proto === 'udp' ? '/udp' : ''}`;
  return `\`tether forward add ${name} ${spec}\``;
}

/** Why `arg` removes nothing; the shell may have cut an id at its `->` (a redirect). Nothing is removed then. */
function noMatch(name: string, arg: string, args: number): string {
  const cut = arg.endsWith('-') ? `; an id with -> must be quoted, e.g. '${arg}>PORT'` : '';
  const none = args > 1 ? '; nothing was removed' : '';
  return `no forward matches ${arg}${cut}${none} (see \`tether forward ls ${name}\`)`;
}

function registerRm(forward: Command): void {
  withHelp(
    forward
      .command('rm')
      .alias('remove')
      .description('remove forwards by id, spec, host port or socket path (a detected forward becomes ignored)')
      .argument('<name>', 'instance name')
      .argument(
        '<what...>',
        'HOSTPORT:GUESTPORT[/udp], host port (HOSTPORT[/udp]; alone: its TCP forward), socket path, or forward id (proto/guestAddr, e.g. tcp/127.0.0.1:3000)',
      ),
    [
      'tether forward rm dev 8080:80',
      'tether forward rm dev 8080',
      'tether forward rm dev tcp/127.0.0.1:3000',
      "tether forward rm dev 'tcp/127.0.0.1:80->10080'   # quoted: the shell reads > as a redirect",
    ],
  ).action(async (name: string, what: string[]) => {
    const client = clientFor(existingInstance(name));
    const forwards = await client.forwards();
    const targets = new Map<string, ForwardView>();
    for (const arg of what) {
      const found = matchForwards(arg, forwards);
      if (found.length === 0) throw new CliError(noMatch(name, arg, what.length));
      for (const f of found) targets.set(f.id, f);
    }
    for (const f of targets.values()) {
      if (f.state === 'ignored') {
        say(`${f.id} is ignored already${f.error ? ` (${f.error})` : ''}\n`);
        continue;
      }
      await client.removeForward(f.id);
      const host = f.hostAddrs.length > 0 ? `${f.hostAddrs.join(', ')} ` : '';
      // A detected forward stays in the list as ignored: the guest still listens, and a later scan must not bring
      // it back.
      const until =
        f.source === 'detected' ? ` (ignored until tether down; ${readdHint(name, f)} forwards it again)` : '';
      say(`removed ${f.proto} ${host}→ guest ${f.guestAddr}${until}\n`);
      // A static or added forward served a guest port that also listens: the rules forward it again as detected.
      const guestPort = portOfAddr(f.guestAddr);
      const back =
        f.source === 'detected' || f.proto === 'unix'
          ? undefined
          : (await client.forwards()).find(
              (g) => g.source === 'detected' && g.proto === f.proto && portOfAddr(g.guestAddr) === guestPort,
            );
      // Only when it took over what the removed one served: a detected forward on another host port was there all along.
      const before = forwards.find((g) => g.id === back?.id);
      const tookOver = back && (!before || back.hostAddrs.some((a) => f.hostAddrs.includes(a)));
      if (back && tookOver && back.state !== 'ignored')
        say(
          `  the guest still listens on ${back.guestAddr}: forwarded again as detected (${back.state}); ` +
            `\`tether forward rm ${name} ${back.id}\` ignores it until tether down\n`,
        );
      // A static forward's port is left ignored rather than detected back onto the host addresses just removed.
      else if (back?.state === 'ignored' && before?.state !== 'ignored' && f.source === 'static')
        say(
          `  the guest still listens on ${back.guestAddr}: ignored until tether down; ` +
            `${readdHint(name, f)} forwards it again\n`,
        );
    }
  });
}
