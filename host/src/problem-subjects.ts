// What a warning or error is about, and which later log lines settle it, so that `status` can tell a problem that is
// still there from one the agent has since recovered from (a mount that failed and mounted again, a host port that
// was busy and is forwarded now). Shared by the running agent's ring (agent/problems.ts) and by the reading of a
// stopped instance's last run (cli/log-reader.ts): both see the same component and fields.
//
// A problem's subject is its component, narrowed to the forward or mount point its line names. States come from the
// `state` field that every state-change line carries. One-off events (an SFTP request that failed, a bad packet)
// have a subject no line settles: they stay history.

type Fields = Record<string, unknown>;

/** The subject of a line of `component` with `fields`: `forward:<id>`, `mount:<mount point>`, or the component. */
export function problemSubject(component: string, fields: Fields): string {
  if (typeof fields.forward === 'string') return `forward:${fields.forward}`;
  // A guest agent that is not this host's build stays so while the link is up: the link coming up does not settle it.
  if (fields.outdated === true) return `${component}:outdated`;
  // A low limit on open files holds for the whole run.
  if (typeof fields.openFiles === 'number') return `${component}:openFiles`;
  // Entries hidden under a mount point stay hidden when the mount is back: its `mounted` line does not settle them.
  if (typeof fields.hiddenEntries === 'number') return `${component}:hidden:${String(fields.mountPoint)}`;
  // So do guest programs left on the mount before a remount: only their restart, which tether cannot see, settles it.
  if (fields.remounted === true) return `${component}:remounted:${String(fields.mountPoint)}`;
  if (typeof fields.mountPoint === 'string') return `${component}:${fields.mountPoint}`;
  // A boot requirement that failed or was skipped (the default mount of ~) is settled by its own `ok` line only: an
  // instance is ready without the default mount.
  if (typeof fields.requirement === 'number') return `${component}:requirement:${fields.requirement}`;
  return component;
}

/**
 * Subjects an instance that is `ready` again has shown to be over: ready needs SSH, the link and the agent's
 * requirements. Not mounts: an instance with only the default mount of `~` is ready without it, so a mount's problem
 * is settled by the mount itself.
 */
const READY_SETTLES = new Set(['agent', 'ssh', 'link']);

/**
 * Whether a line (component, fields) shows `subject` healthy again: a forward forwarding, ignored or removed; a mount
 * mounted; a mount's host watch watching again; the SSH connection connected; the agent link up; the instance ready (which settles SSH, the link and the
 * agent's own lines); a boot requirement met.
 */
export function settles(component: string, fields: Fields, subject: string): boolean {
  const { state } = fields;
  if (typeof state !== 'string') return false;
  if (component === 'forward')
    return (
      subject === problemSubject(component, fields) &&
      ((state === 'forwarding' && !fields.error) || state === 'ignored' || state === 'removed')
    );
  if (component === 'mount' && state === 'mounted') return subject === problemSubject(component, fields);
  if (component === 'watch' && state === 'watching') return subject === problemSubject(component, fields);
  if (component === 'ssh' && state === 'connected') return subject === 'ssh';
  if (component === 'link' && state === 'up') return subject === 'link';
  if (component === 'agent' && state === 'ready') return READY_SETTLES.has(subject);
  if (component === 'agent' && state === 'ok') return subject === problemSubject(component, fields);
  return false;
}

/**
 * Marks `problem` over at `time` if the line (component, fields) settles it (see settles); over because its forward
 * was removed, it says so.
 */
export function settle(
  problem: { subject: string; resolvedAt: string | null; resolution?: 'removed' },
  component: string,
  fields: Fields,
  time: string,
): void {
  if (problem.resolvedAt !== null || !settles(component, fields, problem.subject)) return;
  problem.resolvedAt = time;
  if (component === 'forward' && fields.state === 'removed') problem.resolution = 'removed';
}

/**
 * Cuts `problems` (oldest first) down to `max` in place: the oldest that is over goes first, an open one only when
 * every one is open, so a burst of passing trouble (a server restarting in a loop) cannot push out the error that
 * still holds.
 */
export function trimProblems(problems: { resolvedAt: string | null }[], max: number): void {
  while (problems.length > max) {
    const over = problems.findIndex((p) => p.resolvedAt !== null);
    problems.splice(Math.max(over, 0), 1);
  }
}

/**
 * Appends `problem` to `problems` (oldest first), cut down to `max` as trimProblems does. An earlier problem of the
 * same subject that says the same, numbers aside, gives way to it, whether it was over or not: a warning repeated at
 * every reconnect (a laptop that sleeps), a drop count every 10 s, or the refused connections of a dev server that
 * restarts every second are one entry, with the latest time and state, and cannot crowd out the others.
 */
export function addProblem<P extends { subject: string; msg: string; resolvedAt: string | null }>(
  problems: P[],
  problem: P,
  max: number,
): void {
  const shape = shapeOf(problem.msg);
  const repeat = problems.findIndex((p) => p.subject === problem.subject && shapeOf(p.msg) === shape);
  if (repeat >= 0) problems.splice(repeat, 1);
  problems.push(problem);
  trimProblems(problems, max);
}

function shapeOf(msg: string): string {
  return msg.replace(/\d+/g, '#');
}
