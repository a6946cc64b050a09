// Writing tether.yaml for `tether up`: a first one from its flags (with comments on the keys users edit most), a copy
// of a file given with -c (its relative paths made absolute), and flags applied to an existing one, keeping its
// comments and layout.
import { readFileSync, writeFileSync } from 'node:fs';
import { dirname, isAbsolute, resolve } from 'node:path';
import { Document, isMap, isScalar, isSeq, parseDocument } from 'yaml';
import { parseYaml } from './load.js';
import { DEFAULT_GUEST_SOCKET } from './schema.js';

/** What `tether up` flags can say about a new or existing instance. */
interface ConfigOverrides {
  host?: string;
  port?: number;
  user?: string;
  identityFile?: string;
}

const HEADER = `tether instance config. Every key, its default and meaning: README, "Configuration".
Edit and run \`tether down NAME && tether up NAME\` to apply.`;

/** Writes a first tether.yaml from `up` flags, with comments explaining the keys a user edits most. */
export function writeInitialConfig(file: string, o: ConfigOverrides & { user: string }): void {
  const ssh: Record<string, unknown> = { host: o.host ?? '127.0.0.1', port: o.port ?? 22, user: o.user };
  if (o.identityFile) ssh.identityFile = o.identityFile;
  const doc = new Document({
    ssh,
    guestAgent: { socket: DEFAULT_GUEST_SOCKET, provision: 'auto' },
    portForwards: [],
  });
  doc.commentBefore = ` ${HEADER.replaceAll('\n', '\n ')}`;
  comment(doc, 'ssh', ' How to reach the VM (key auth; ssh-agent is used too when SSH_AUTH_SOCK is set).');
  comment(
    doc,
    'guestAgent',
    ' tether-guest inside the VM. provision: auto uploads, installs and starts it when missing or outdated;\n' +
      ' never expects it to run already. socket: this default is for a login user with root or passwordless sudo;\n' +
      ' any other gets <installDir>/agent.sock instead (tether status NAME --json: link.socket).',
  );
  comment(
    doc,
    'portForwards',
    ' Rules for guest listeners, first match wins (Lima semantics), e.g.\n' +
      '   - guestPortRange: [8000, 8100]\n     hostPortRange: [18000, 18100]\n' +
      '   - guestPort: 22\n     ignore: true\n' +
      '   - guestSocket: /var/run/docker.sock\n' +
      ' Default: every guest port on loopback or wildcard appears on host 127.0.0.1 and ::1 at the same port.',
  );
  doc.comment =
    ' mounts: host directories mounted in the guest at the same path. Absent: your home directory, read-only.\n' +
    ' An empty list disables mounts.\n mounts:\n   - location: "~"\n     writable: false';
  writeFileSync(file, doc.toString({ lineWidth: 0 }), { mode: 0o600 });
}

function comment(doc: Document, key: string, text: string): void {
  const map = doc.contents;
  if (!isMap(map)) return;
  const pair = map.items.find((p) => isScalar(p.key) && p.key.value === key);
  if (pair && isScalar(pair.key)) pair.key.commentBefore = text;
}

/**
 * Copies a config file (`tether up -c FILE`) to `dest`. Relative host paths in it (ssh.identityFile,
 * mounts[].location, portForwards[].hostSocket) meant the source file's directory; they are written out absolute,
 * or the copy would resolve them against the instance directory.
 */
export function copyConfigFile(source: string, dest: string): void {
  const doc = parseDocument(readFileSync(source, 'utf8'));
  const base = dirname(resolve(source));
  const absolute = (path: (string | number)[]) => {
    const value = doc.getIn(path);
    if (typeof value === 'string' && value !== '' && !value.startsWith('~') && !isAbsolute(value))
      doc.setIn(path, resolve(base, value));
  };
  absolute(['ssh', 'identityFile']);
  for (const list of ['mounts', 'portForwards'] as const) {
    const items = doc.get(list);
    const count = isSeq(items) ? items.items.length : 0;
    for (let i = 0; i < count; i++) absolute([list, i, list === 'mounts' ? 'location' : 'hostSocket']);
  }
  writeFileSync(dest, doc.toString({ lineWidth: 0 }), { mode: 0o600 });
}

/** Applies `up` flags to an existing tether.yaml, keeping its comments and layout. */
export function updateConfigFile(file: string, o: ConfigOverrides): boolean {
  // A file with syntax errors is left as it is, and the error says where they are.
  const { doc } = parseYaml(readFileSync(file, 'utf8'), file);
  let changed = false;
  for (const [key, value] of Object.entries(o)) {
    if (value === undefined || doc.getIn(['ssh', key]) === value) continue;
    doc.setIn(['ssh', key], value);
    changed = true;
  }
  if (changed) writeFileSync(file, doc.toString({ lineWidth: 0 }), { mode: 0o600 });
  return changed;
}
