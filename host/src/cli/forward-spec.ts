// `tether forward add/rm` arguments: `[HOSTIP:]HOSTPORT:GUESTPORT[/udp]` or `PORT[/udp]`, `--socket GUEST:HOST`, and matching an
// rm argument (id, spec or host port) against the agent's forwards. Pure parsing; no I/O.
import { isIP } from 'node:net';
import { basename, join } from 'node:path';
import { ipOfAddr, portOfAddr } from '../address.js';
import { expandHome } from '../config/paths.js';
import type { ForwardSpec, ForwardView } from '../model.js';
import { UsageError } from './errors.js';

type PortSpec = Extract<ForwardSpec, { proto: 'tcp' | 'udp' }>;

const ADDRESS = String.raw`\[[0-9a-fA-F:.]+\]|[0-9.]+|localhost`;
/** `[HOSTIP:]HOSTPORT:[GUESTIP:]GUESTPORT[/proto]`: ssh -L's order, the guest address optional. */
const SPEC_RE = new RegExp(String.raw`^(?:(${ADDRESS}):)?(\d{1,5}):(?:(${ADDRESS}):)?(\d{1,5})(?:\/(tcp|udp))?$`, 'i');
/** A port alone: the same port on both sides, as `forward rm PORT` names a host port. */
const SAME_PORT_RE = /^(\d{1,5})(?:\/(tcp|udp))?$/i;
export const PORT_SPEC_FORM = '[HOSTIP:]HOSTPORT:GUESTPORT[/udp] or PORT[/udp]';

function port(s: string, what: string, arg: string): number {
  const n = Number(s);
  if (!Number.isInteger(n) || n < 1 || n > 65_535) throw new UsageError(`${arg}: ${what} ${s} is not a port (1-65535)`);
  return n;
}

/**
 * An address of a spec, brackets taken off; undefined for none or `localhost`, which is what a forward without an
 * address already serves (127.0.0.1 and ::1 on the host, the guest's loopback).
 */
function address(text: string | undefined, arg: string): string | undefined {
  if (!text || text.toLowerCase() === 'localhost') return undefined;
  const ip = text.replace(/^\[|\]$/g, '');
  if (isIP(ip) === 0) throw new UsageError(`${arg}: ${ip} is not an IP address`);
  return ip;
}

/**
 * `8080:80`, `127.0.0.1:8080:80`, `localhost:8080:80`, `[::1]:5353:53/udp` (or `/UDP`), `3000` (3000:3000) → a port
 * ForwardSpec; `8004:127.0.0.53:53` forwards to that guest address instead of the guest's loopback.
 */
export function parsePortSpec(arg: string): PortSpec {
  const same = SAME_PORT_RE.exec(arg.trim());
  if (same) {
    const p = port(same[1], 'port', arg);
    return { proto: (same[2]?.toLowerCase() as 'tcp' | 'udp' | undefined) ?? 'tcp', hostPort: p, guestPort: p };
  }
  const m = SPEC_RE.exec(arg.trim());
  // `8080:80:90`: three numbers, read as a host address that is none would name the wrong mistake.
  const numbers = /^\d+:\d+:\d+(\/\w+)?$/.test(arg.trim());
  if (!m || numbers) {
    // `::1:8080:80`: an IPv6 address's own colons leave the ports unclear without brackets.
    const v6 = /^(.*:.*):(\d+):(\d+)(\/\w+)?$/.exec(arg.trim());
    if (v6 && isIP(v6[1]) === 6)
      throw new UsageError(
        `${arg}: put an IPv6 host address in brackets, e.g. [${v6[1]}]:${v6[2]}:${v6[3]}${v6[4] ?? ''}`,
      );
    throw new UsageError(
      `${arg}: expected ${PORT_SPEC_FORM}${numbers ? ' (three parts: one of the first two is an IP address)' : ''}, e.g. 8080:80, 3000, 127.0.0.1:5353:53/udp, or 8004:127.0.0.53:53 for a guest address other than its loopback`,
    );
  }
  const spec: PortSpec = {
    proto: (m[5]?.toLowerCase() as 'tcp' | 'udp' | undefined) ?? 'tcp',
    hostPort: port(m[2], 'host port', arg),
    guestPort: port(m[4], 'guest port', arg),
  };
  const hostIP = address(m[1], arg);
  if (hostIP) {
    const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(hostIP);
    if (mapped)
      throw new UsageError(`${arg}: a host cannot listen on ${hostIP}; give the IPv4 address itself, ${mapped[1]}`);
    spec.hostIP = hostIP;
  }
  const guestIP = address(m[3], arg);
  if (guestIP) spec.guestIP = guestIP;
  return spec;
}

/**
 * `/var/run/docker.sock:~/docker.sock` → a unix ForwardSpec (the host path's `~` expands here, on the host): `GUEST:HOST`
 * socket paths, or `GUEST` alone, whose host socket is `instanceDir`/its file name (as a socket rule without
 * hostSocket in tether.yaml).
 */
export function parseSocketSpec(arg: string, instanceDir: string): Extract<ForwardSpec, { proto: 'unix' }> {
  if (arg.startsWith('/') && !arg.includes(':'))
    return { proto: 'unix', guestSocket: arg, hostSocket: join(instanceDir, basename(arg)) };
  // Either path could hold the second ':'; guessing would make a socket nobody asked for.
  if (arg.split(':').length > 2)
    throw new UsageError(
      `--socket ${arg}: more than one ':'; GUEST:HOST takes two paths without ':' (a socket rule in tether.yaml, guestSocket and hostSocket, takes any path)`,
    );
  const i = arg.indexOf(':');
  const guest = i > 0 ? arg.slice(0, i) : '';
  const host = i > 0 ? arg.slice(i + 1) : '';
  if (guest && host && !guest.startsWith('/'))
    throw new UsageError(
      `--socket ${arg}: the guest socket ${guest} must be an absolute path, e.g. /var/run/docker.sock`,
    );
  if (!guest || !host)
    throw new UsageError(
      `--socket ${arg}: expected GUEST[:HOST] socket paths, e.g. /var/run/docker.sock:~/docker.sock, or /var/run/docker.sock for ${join(instanceDir, 'docker.sock')}`,
    );
  return { proto: 'unix', guestSocket: guest, hostSocket: expandHome(host, process.cwd()) };
}

/**
 * The forwards an `rm` argument names: an id (`tcp/0.0.0.0:8080`, i.e. proto/guest address as `forward ls` shows
 * them, or the full id of a forward to another host port), a socket path, a host port (`PORT[/udp]`), or a spec.
 * Empty when none match.
 */
export function matchForwards(arg: string, forwards: ForwardView[]): ForwardView[] {
  if (/^(tcp|udp|unix)\//.test(arg)) {
    const exact = forwards.filter((f) => f.id === arg);
    if (exact.length > 0) return exact;
    // An id names the guest address a forward was given; `forward ls` shows where it goes now (a forward to the
    // guest's 127.0.0.1 follows a server on ::1 only): either spelling names it, with its host port after `->`.
    const [target, hostPort] = arg.split('->');
    return explicitFirst(
      forwards.filter(
        (f) =>
          `${f.proto}/${f.guestAddr}` === target &&
          (hostPort === undefined || f.hostAddrs.some((a) => portOfAddr(a) === Number(hostPort))),
      ),
    );
  }
  // A path as `forward add --socket` took it: relative ones from the current directory.
  const atPath = () => {
    const path = expandHome(arg, process.cwd());
    return forwards.filter((f) => f.proto === 'unix' && (f.guestAddr === path || f.hostAddrs.includes(path)));
  };
  if (/^[/~.]/.test(arg) || (arg.includes('/') && !/\/(tcp|udp)$/.test(arg))) return atPath();
  const bare = /^(\d+)(?:\/(tcp|udp))?$/.exec(arg);
  if (bare) {
    // A host port alone means TCP, as in `forward add` (or UDP where the port has no TCP forward): `PORT/udp` says it.
    const hostPort = port(bare[1], 'host port', arg);
    const onPort = forwards.filter((f) => f.hostAddrs.some((a) => portOfAddr(a) === hostPort));
    const proto = bare[2] ?? (onPort.some((f) => f.proto === 'tcp') ? 'tcp' : 'udp');
    const matched = explicitFirst(onPort.filter((f) => f.proto === proto));
    if (matched.length > 0) return matched;
    // An ignored forward binds no host port: the port names it by its guest port (`forward rm` twice says so).
    return forwards.filter(
      (f) => f.state === 'ignored' && portOfAddr(f.guestAddr) === hostPort && f.proto === (bare[2] ?? f.proto),
    );
  }
  let spec: ReturnType<typeof parsePortSpec>;
  try {
    spec = parsePortSpec(arg);
  } catch (err) {
    // Not a spec at all: rm takes more than add's spec, so say all of it (a bad port in a spec says that instead).
    if (!(err instanceof UsageError) || !/: expected \[HOSTIP:\]/.test(err.message)) throw err;
    const byPath = atPath(); // `docker.sock`, in the directory it was added from
    if (byPath.length > 0) return byPath;
    throw new UsageError(
      `${arg}: expected a forward id (tcp/127.0.0.1:3000), a host port (8080), a spec ([HOSTIP:]HOSTPORT:GUESTPORT[/udp]) or a socket path`,
    );
  }
  return explicitFirst(
    forwards.filter(
      (f) =>
        f.proto === spec.proto &&
        portOfAddr(f.guestAddr) === spec.guestPort &&
        (!spec.guestIP || ipOfAddr(f.guestAddr) === spec.guestIP) &&
        f.hostAddrs.some((a) => portOfAddr(a) === spec.hostPort && (!spec.hostIP || ipOfAddr(a) === spec.hostIP)),
    ),
  );
}

/**
 * When an argument names both forwards the operator added (forward add, static rules) and detected ones, it means
 * the added ones: a detected forward waiting behind an added one for the same host port takes the port back.
 */
function explicitFirst(matches: ForwardView[]): ForwardView[] {
  const explicit = matches.filter((f) => f.source !== 'detected');
  return explicit.length > 0 ? explicit : matches;
}
