// Loading tether.yaml: YAML parsing, validation against the schema, `~` expansion and default mounts. Every error
// names the file, the line:column when known, the key path, the bad value and what was expected. The shape itself
// lives in schema.ts; writing one from `tether up` flags in write.ts.
import { readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { type Document, isMap, isPair, isScalar, LineCounter, type Node, parseDocument, visit } from 'yaml';
import type { z } from 'zod';
import { deniedAt, runAsOwner } from '../owner.js';
import { ConfigError, type ConfigProblem } from './errors.js';
import { expandHome } from './paths.js';
import { Config, GuestAgentConfig, MountConfig, PortRule, SocketRule, SshConfig } from './schema.js';

/** A config after loading: paths expanded, mounts defaulted. */
export type LoadedConfig = Config & {
  mounts: MountConfig[];
  /** No `mounts` key: `mounts` is DEFAULT_MOUNTS, which the agent makes when it can (requirement 5 is not failed). */
  mountsDefaulted: boolean;
};

/** Mounts used when tether.yaml has no `mounts` key: the host's home directory, read-only. */
const DEFAULT_MOUNTS = [{ location: '~', writable: false }] as const;

export function loadConfig(file: string): LoadedConfig {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    const denied = e.code === 'EACCES' ? deniedAt(file) : null;
    const why = denied ? runAsOwner(denied) : e.message;
    throw new ConfigError(file, [{ path: '', line: null, column: null, message: `${file}: cannot read: ${why}` }]);
  }
  return parseConfig(text, file);
}

/** Parses and validates config text; `file` is used in messages and as the base for relative paths. */
export function parseConfig(text: string, file: string): LoadedConfig {
  const { doc, lines } = parseYaml(text, file);
  const raw = plainValue(doc, lines, file);
  bareTildes(doc, raw);
  const result = Config.safeParse(raw, { reportInput: true });
  if (!result.success) {
    const issues = portForwardIssues(result.error.issues, raw);
    const problems = issues.flatMap((issue) => describeIssue(issue, raw, doc, lines, file));
    throw new ConfigError(file, problems);
  }
  return finish(result.data, dirname(resolve(file)));
}

/** The YAML document of config text; throws a ConfigError naming each syntax error's line and column. */
export function parseYaml(text: string, file: string): { doc: Document; lines: LineCounter } {
  const lines = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lines, prettyErrors: true, uniqueKeys: true });
  if (doc.errors.length > 0) {
    // One mistake can make the parser report several errors at the same spot ("Nested mappings are not allowed in
    // compact mappings" and "Implicit keys need to be on a single line" for one mis-indented key): the first says it.
    const seen = new Set<string>();
    const firstAtEach = doc.errors.filter((e) => {
      const at = `${e.linePos?.[0]?.line}:${e.linePos?.[0]?.col}`;
      if (seen.has(at)) return false;
      seen.add(at);
      return true;
    });
    throw new ConfigError(
      file,
      firstAtEach.map((e) => {
        const pos = e.linePos?.[0];
        const where = pos ? `${file}:${pos.line}:${pos.col}` : file;
        return {
          path: '',
          line: pos?.line ?? null,
          column: pos?.col ?? null,
          message: `${where}: YAML syntax error: ${e.message.split('\n')[0].replace(/ at line \d+, column \d+:?$/, '')}`,
        };
      }),
    );
  }
  return { doc, lines };
}

/**
 * The document as plain values. Aliases are resolved only here, so an alias to no anchor, or one that expands past
 * yaml's alias limit (a "billion laughs" file), fails here: named by the first alias's position.
 */
function plainValue(doc: Document, lines: LineCounter, file: string): unknown {
  try {
    return doc.toJS() ?? {};
  } catch (err) {
    let at: number | undefined;
    visit(doc, {
      Alias(_key, node) {
        at = node.range?.[0];
        return visit.BREAK;
      },
    });
    const pos = at === undefined ? null : lines.linePos(at);
    const where = pos ? `${file}:${pos.line}:${pos.col}` : file;
    throw new ConfigError(file, [
      {
        path: '',
        line: pos?.line ?? null,
        column: pos?.col ?? null,
        message: `${where}: YAML error: ${(err as Error).message}`,
      },
    ]);
  }
}

/**
 * `location: ~` is YAML's null, but in tether.yaml it means the home directory (the README's own example); so do
 * `mountPoint: ~` and `installDir: ~` (the guest user's home). Only a literal `~` is read that way: an empty
 * `location:` stays null and is refused, rather than exporting `$HOME`.
 */
function bareTildes(doc: Document, raw: unknown): void {
  const setIfTilde = (parent: unknown, path: (string | number)[]) => {
    const key = path[path.length - 1] as string;
    if (parent === null || typeof parent !== 'object' || (parent as Record<string, unknown>)[key] !== null) return;
    const node = doc.getIn(path, true);
    if (isScalar(node) && node.source === '~') (parent as Record<string, unknown>)[key] = '~';
  };
  const top = raw as { mounts?: unknown; guestAgent?: unknown } | null;
  setIfTilde(top?.guestAgent, ['guestAgent', 'installDir']);
  if (!Array.isArray(top?.mounts)) return;
  top.mounts.forEach((m: unknown, i) => {
    setIfTilde(m, ['mounts', i, 'location']);
    setIfTilde(m, ['mounts', i, 'mountPoint']);
  });
}

type Issue = z.core.$ZodIssue;
type Key = PropertyKey;

/**
 * A portForwards entry is a socket rule or a port rule; zod reports a failed union against whichever branch it
 * liked best, which can be the wrong one ("unknown key guestSocket"). Re-check each failing entry against the shape
 * it was meant to be: a socket rule when it names guestSocket or hostSocket.
 */
function portForwardIssues(issues: Issue[], raw: unknown): Issue[] {
  const entries = (raw as { portForwards?: unknown }).portForwards;
  if (!Array.isArray(entries)) return issues;
  // The whole config's own checks (a custom issue) name their rule already; the union's say nothing useful.
  const fromUnion = (i: Issue) => i.path[0] === 'portForwards' && typeof i.path[1] === 'number' && i.code !== 'custom';
  const failing = new Set(issues.filter(fromUnion).map((i) => i.path[1] as number));
  const rest = issues.filter((i) => !(fromUnion(i) && failing.has(i.path[1] as number)));
  for (const index of failing) {
    const entry = entries[index];
    const isSocket = entry !== null && typeof entry === 'object' && ('guestSocket' in entry || 'hostSocket' in entry);
    const portKeys = isSocket ? Object.keys(entry).filter((k) => Object.hasOwn(PortRule.shape, k)) : [];
    if (portKeys.length > 0) {
      const socketKeys = Object.keys(entry).filter((k) => Object.hasOwn(SocketRule.shape, k));
      rest.push({
        code: 'custom',
        path: ['portForwards', index],
        message:
          `a rule forwards either a port (guestPort, hostPort, …) or a unix socket (guestSocket, hostSocket), ` +
          `not both: got ${[...portKeys, ...socketKeys].join(', ')}`,
        input: entry,
      } as Issue);
      continue;
    }
    const r = (isSocket ? SocketRule : PortRule).safeParse(entry, { reportInput: true });
    for (const i of r.error?.issues ?? []) rest.push({ ...i, path: ['portForwards', index, ...i.path] } as Issue);
  }
  return rest;
}

function describeIssue(issue: Issue, raw: unknown, doc: Document, lines: LineCounter, file: string): ConfigProblem[] {
  if (issue.code === 'unrecognized_keys') {
    const known = knownKeys(issue.path, raw);
    return issue.keys.map((key) => {
      const path = [...issue.path, key];
      const near = known ? closestKey(key, known) : null;
      const hint = near ? `; did you mean ${near}? ` : '; ';
      const expectedKeys = known ? `${hint}expected one of: ${known.join(', ')}` : '';
      const what = `unknown key (got ${show(valueAt(raw, path))})${expectedKeys}`;
      return problem(file, path, locate(doc, lines, path, true), what);
    });
  }
  const path = issue.path;
  const present = hasPath(raw, path);
  const value = present ? valueAt(raw, path) : undefined;
  const got = present ? `got ${show(value)}` : 'missing';
  return [problem(file, path, locate(doc, lines, path, false), `${got}; ${expected(issue)}`)];
}

/**
 * The allowed key a misspelt one most likely meant: the same but for case, `_` or `-` (identity_file, hostport), or
 * at most two edits away (hostPrt); null when none is that close, or two are.
 */
export function closestKey(key: string, known: readonly string[]): string | null {
  const fold = (k: string) => k.toLowerCase().replace(/[-_]/g, '');
  const same = known.filter((k) => fold(k) === fold(key));
  if (same.length === 1) return same[0];
  const near = known.filter((k) => editDistance(fold(k), fold(key)) <= Math.min(2, Math.floor(k.length / 3)));
  return near.length === 1 ? near[0] : null;
}

/** Levenshtein distance (keys are short: the full table is cheap). */
function editDistance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const row = [i];
    for (let j = 1; j <= b.length; j++)
      row[j] = Math.min(prev[j] + 1, row[j - 1] + 1, prev[j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1));
    prev = row;
  }
  return prev[b.length];
}

/** The keys the schema allows in the object at `path` (tether.yaml's sections and list entries). */
function knownKeys(path: readonly Key[], raw: unknown): string[] | null {
  const [section, index] = path;
  let shape: object | null = null;
  if (path.length === 0) shape = Config.shape;
  else if (section === 'ssh' && path.length === 1) shape = SshConfig.shape;
  else if (section === 'guestAgent' && path.length === 1) shape = GuestAgentConfig.shape;
  else if (section === 'mounts' && path.length === 2) shape = MountConfig.shape;
  else if (section === 'portForwards' && path.length === 2) {
    const entry = valueAt(raw, ['portForwards', index]);
    const isSocket = entry !== null && typeof entry === 'object' && ('guestSocket' in entry || 'hostSocket' in entry);
    shape = isSocket ? SocketRule.shape : PortRule.shape;
  }
  return shape ? Object.keys(shape) : null;
}

function expected(issue: Issue): string {
  const msg = issue.message.replace(/^Invalid input: /, '').replace(/^(Too (big|small)|Invalid option): /, '');
  return msg.startsWith('expected') ? msg : `expected: ${msg}`;
}

function problem(file: string, path: readonly Key[], pos: [number, number] | null, what: string): ConfigProblem {
  const p = formatPath(path);
  const where = pos ? `${file}:${pos[0]}:${pos[1]}` : file;
  return {
    path: p,
    line: pos?.[0] ?? null,
    column: pos?.[1] ?? null,
    message: `${where}: ${p || '(top level)'}: ${what}`,
  };
}

/** `portForwards[2].hostPortRange` */
function formatPath(path: readonly Key[]): string {
  return path.map((k, i) => (typeof k === 'number' ? `[${k}]` : i === 0 ? String(k) : `.${String(k)}`)).join('');
}

function hasPath(raw: unknown, path: readonly Key[]): boolean {
  let cur = raw;
  for (const k of path) {
    if (cur === null || typeof cur !== 'object' || !(k in (cur as object))) return false;
    cur = (cur as Record<Key, unknown>)[k];
  }
  return true;
}

function valueAt(raw: unknown, path: readonly Key[]): unknown {
  return path.reduce<unknown>((cur, k) => (cur as Record<Key, unknown>)[k], raw);
}

function show(value: unknown): string {
  const s = JSON.stringify(value);
  if (s === undefined) return String(value);
  return s.length > 80 ? `${s.slice(0, 77)}...` : s;
}

/** Line and column of the value at `path` (or of its key), else of the nearest parent that exists. */
function locate(doc: Document, lines: LineCounter, path: readonly Key[], keyOf: boolean): [number, number] | null {
  for (let n = path.length; n >= 0; n--) {
    const sub = path.slice(0, n);
    const node =
      n === 0
        ? doc.contents
        : keyOf && n === path.length
          ? keyNode(doc, sub.slice(0, -1), sub[n - 1])
          : doc.getIn(sub, true);
    const range = (node as Node | null | undefined)?.range;
    if (range) {
      const pos = lines.linePos(range[0]);
      return [pos.line, pos.col];
    }
  }
  return null;
}

function keyNode(doc: Document, parentPath: readonly Key[], key: Key): unknown {
  const parent = parentPath.length === 0 ? doc.contents : doc.getIn(parentPath, true);
  if (isMap(parent)) {
    const pair = parent.items.find((p) => isPair(p) && isScalar(p.key) && p.key.value === key);
    return pair?.key;
  }
  return typeof key === 'number' ? doc.getIn([...parentPath, key], true) : undefined;
}

/**
 * installDir is relative to the guest user's home already, so `~/x` means `x` (the install script would otherwise
 * create a directory named `~` there).
 */
function underGuestHome(dir: string): string {
  if (dir === '~' || dir === '~/') return '.';
  return dir.startsWith('~/') ? dir.slice(2) : dir;
}

function finish(config: Config, base: string): LoadedConfig {
  const mounts = (config.mounts ?? DEFAULT_MOUNTS.map((m) => MountConfig.parse(m))).map((m) => {
    const location = expandHome(m.location, base);
    return { ...m, location, mountPoint: m.mountPoint ?? location };
  });
  return {
    ...config,
    mountsDefaulted: config.mounts === undefined,
    ssh: { ...config.ssh, identityFile: config.ssh.identityFile && expandHome(config.ssh.identityFile, base) },
    guestAgent: { ...config.guestAgent, installDir: underGuestHome(config.guestAgent.installDir) },
    portForwards: config.portForwards.map((r) =>
      'guestSocket' in r && r.hostSocket !== undefined ? { ...r, hostSocket: expandHome(r.hostSocket, base) } : r,
    ),
    mounts,
  };
}
