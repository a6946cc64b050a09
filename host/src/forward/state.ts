// A forward's state and its error, worked out from what keeps it from serving (ignored, suspended, refused by the
// guest) and from its host bindings (who holds them, which are bound and why the others are not).
import type { ForwardCause, ForwardHolder, ForwardState } from '../model.js';
import type { Forward } from './forward.js';
import type { BindingView, HostBindings } from './host-bindings.js';
import { privilegedError } from './privileged.js';

/**
 * The end of a unix forward's error while its guest service is down (no socket, or one nothing listens on): its host
 * socket is closed meanwhile, and it serves again by itself once the service is back.
 */
const SERVICE_DOWN_NOTE = 'the host socket is closed until the service is back';

export interface StateAndError {
  state: ForwardState;
  error: string | null;
  /** What the error comes from (ForwardView.cause); absent when the host bindings alone tell. */
  cause?: ForwardCause;
  /** Who holds the host address of a `conflict` (ForwardView.heldBy); absent otherwise. */
  heldBy?: ForwardHolder;
}

/**
 * The forward's state, or null while it has none to show yet (its first bind attempt or look is running).
 * `reachedBy`: an explicit forward of the same guest port (`forward add 10080:80`): a detected forward that may not
 * listen on its own host port (below 1024 for this user) is then `ignored`, not a `privileged` problem whose fix the
 * operator has already made.
 */
export function forwardState(f: Forward, bindings: HostBindings<Forward>, reachedBy?: Forward): StateAndError | null {
  if (f.ignored) {
    // An ignored listener that an added forward reaches (`forward add 8053:127.0.0.53:53`, as its reason suggested)
    // says where it is served instead of repeating the suggestion.
    if (reachedBy?.guestIP !== f.guestIP || !reachedBy.state || reachedBy.state === 'ignored')
      return { state: 'ignored', error: f.ignored.text, cause: f.ignored.cause };
    const where = reachedBy.hostAddrs.join(', ');
    const served = `served on host ${where} by forward ${reachedBy.id} (${reachedBy.state})`;
    // Why it is ignored comes first when the operator said so: the rules alone would forward it.
    if (f.ignored.cause === 'removed')
      return { state: 'ignored', error: `${f.ignored.text}; ${served}`, cause: 'removed' };
    return { state: 'ignored', error: served, cause: 'served-elsewhere' };
  }
  // Refused before any host binding was made (its host socket is another forward's).
  if (f.bindingKeys.length === 0 && f.refused)
    return { state: 'error', error: refusal(f.refused), cause: f.refused.cause };
  const entries = bindings.of(f.bindingKeys);
  if (entries.every((e) => e.status === 'pending')) return null; // first bind attempt still running
  // A first state waits for every address: `forwarding` on one, then `conflict` a moment later, would be two lines
  // for one outcome.
  if (!f.state && entries.some((e) => e.status === 'pending')) return null;
  if (f.suspended) return { state: 'suspended', error: f.suspended.text, cause: f.suspended.cause };
  if (f.look && !f.look.looked) return null; // a unix forward's first look at its guest socket is running
  const host = bindingsState(f, entries, bindings);
  if (host.state === 'privileged' && reachedBy) {
    const served = `guest port ${f.guestPort} is served on host ${reachedBy.hostAddrs.join(', ')}`;
    return {
      state: 'ignored',
      error: `host ${f.hostAddrs.join(', ')} needs privileges; ${served} (forward ${reachedBy.id})`,
      cause: 'served-elsewhere',
    };
  }
  if (!f.refused) return host;
  const { cause } = f.refused;
  const text = refusal(f.refused);
  // A host side that serves nothing is named first, beside the guest's refusal: both need fixing.
  if (host.state === 'forwarding') return { state: 'error', error: text, cause };
  const error = `${host.error}; ${text}`;
  return host.state === 'conflict'
    ? { state: 'conflict', error, cause, heldBy: host.heldBy }
    : { state: 'error', error, cause };
}

/** Why a forward's channels fail, as its error says it. */
function refusal({ cause, text }: NonNullable<Forward['refused']>): string {
  return cause === 'service-down' ? `${text}; ${SERVICE_DOWN_NOTE}` : text;
}

function bindingsState(f: Forward, entries: BindingView<Forward>[], bindings: HostBindings<Forward>): StateAndError {
  const taken = entries.flatMap((e) => {
    const owner = bindings.owner(e);
    return owner && owner.guestPort !== f.guestPort ? [{ owner, entry: e, address: e.binding.address }] : [];
  });
  if (taken.length) {
    // The forward that has the address first may not hold it either: a program on the host can, and both wait.
    const waiting = taken.filter(({ entry }) => entry.status === 'conflict' && entry.error);
    const error = waiting.map(
      ({ owner, entry, address }) =>
        `host ${address} is wanted by forward ${owner.id} (guest ${owner.guestAddr}) first, which waits for it too: ${entry.error}`,
    );
    // Both families of one port held by one forward (the usual case) are one line.
    const held = new Map<Forward, string[]>();
    for (const t of taken) if (!waiting.includes(t)) held.set(t.owner, [...(held.get(t.owner) ?? []), t.address]);
    for (const [owner, addresses] of held)
      error.push(
        `host ${addresses.join(', ')} ${addresses.length > 1 ? 'are' : 'is'} taken by forward ${owner.id} (guest ${owner.guestAddr})`,
      );
    const heldBy: ForwardHolder = { kind: 'forward', id: taken[0].owner.id, address: taken[0].address };
    return { state: 'conflict', error: error.join('; '), heldBy };
  }
  const settled = entries.filter((e) => e.status !== 'pending');
  const failures = failureLines(settled);
  const bound = settled.filter((e) => e.status === 'bound').map((e) => e.binding.address);
  // A port busy on one family is a conflict even while the other family forwards: `localhost:PORT` may reach the
  // other program. An address the host cannot bind at all (no IPv6) does not stop the family that works.
  if (settled.some((e) => e.status === 'conflict')) {
    const meanwhile = bound.length ? `; ${bound.join(', ')} forwarding meanwhile` : '';
    return { state: 'conflict', error: failures.join('; ') + meanwhile, heldBy: mainHolder(settled) };
  }
  if (bound.length) return { state: 'forwarding', error: failures.length ? failures.join('; ') : null };
  const error = failures.join('; ');
  if (settled.some((e) => e.status === 'privileged')) return { state: 'privileged', error };
  return { state: 'error', error };
}

/**
 * Who holds a forward's busy addresses, for its fix: one of tether's own forwards first (removing one of the two is
 * the fix), then another tether instance's, then a passing connection; another process when no address says more.
 */
function mainHolder(settled: BindingView<Forward>[]): ForwardHolder {
  const holders = settled.flatMap((e) => (e.status === 'conflict' && e.holder ? [e.holder] : []));
  return (
    holders.find((h) => h.kind === 'forward') ??
    holders.find((h) => h.kind === 'instance') ??
    holders.find((h) => h.kind === 'connection') ?? { kind: 'process' }
  );
}

/** Why the unbound addresses failed, one line each; those that want privileges share one line and its advice. */
function failureLines(settled: BindingView<Forward>[]): (string | null)[] {
  const privileged = settled.filter((e) => e.status === 'privileged').map((e) => e.binding.address);
  const others = mergeByAddress(settled.filter((e) => e.status !== 'bound' && e.status !== 'privileged'));
  if (privileged.length === 0) return others;
  return [privilegedError(privileged), ...others];
}

/**
 * One line for addresses that failed alike (the usual conflict: 127.0.0.1:P and [::1]:P both busy): `host addresses
 * 127.0.0.1:80, [::1]:80 are in use by another process; …` rather than the same sentence twice.
 */
function mergeByAddress(failed: BindingView<Forward>[]): (string | null)[] {
  const groups = new Map<string, string[]>();
  const lines: (string | null)[] = [];
  for (const { error, binding } of failed) {
    if (!error?.includes(binding.address)) {
      lines.push(error);
      continue;
    }
    const template = error.replace(binding.address, '\0');
    const addrs = groups.get(template);
    if (addrs) addrs.push(binding.address);
    else groups.set(template, [binding.address]);
  }
  for (const [template, addrs] of groups) {
    const list = addrs.join(', ');
    const plural = addrs.length > 1 && template.startsWith('host address \0 is ');
    lines.push(
      plural
        ? `host addresses ${list} are ${template.slice('host address \0 is '.length)}`
        : template.replace('\0', list),
    );
  }
  return lines;
}
