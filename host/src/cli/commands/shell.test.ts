import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { shellArgs, shellScript } from './shell.js';

describe('shellScript', () => {
  it('runs the login shell, or the command in it with each argument arriving as one word', () => {
    expect(shellScript(null, [])).toBe('exec "$SHELL" -l');
    const words = ['printf', '%s|', "a b'c", '$HOME', 'back\\slash', '*', '"q"'];
    for (const shell of ['/bin/sh', '/bin/bash'].filter((s) => existsSync(s))) {
      const out = execFileSync('/bin/sh', ['-c', shellScript(null, words)], {
        env: { SHELL: shell, HOME: '/nonexistent-home', PATH: '/usr/bin:/bin' },
        encoding: 'utf8',
      });
      expect(out, shell).toBe(`a b'c|$HOME|back\\slash|*|"q"|`);
    }
  });

  it('changes to a mounted directory quietly, and to a --workdir or fails', () => {
    expect(shellScript({ dir: '/home/me/a b', required: false }, ['pwd'])).toBe(
      `cd '/home/me/a b' 2>/dev/null\nexec "$SHELL" -l -c pwd`,
    );
    expect(shellScript({ dir: '/srv', required: true }, [])).toMatch(
      /^cd \/srv 2>\/dev\/null \|\| \{ printf .*>&2; exit 1; \}\n/,
    );
    const r = spawnSync('sh', ['-c', shellScript({ dir: "/nonexistent/it's", required: true }, ['pwd'])], {
      encoding: 'utf8',
    });
    expect(r.status).toBe(1);
    expect(r.stderr).toBe(
      "tether: --workdir /nonexistent/it's: no such directory in the guest, or the SSH user may not enter it\n",
    );
  });

  it('reads ~ and ~/x as the guest home', () => {
    expect(shellScript({ dir: '~', required: true }, [])).toMatch(/^cd "\$HOME" 2>\/dev\/null \|\| \{/);
    expect(shellScript({ dir: '~/my dir', required: true }, [])).toMatch(
      /^cd "\$HOME"\/'my dir' 2>\/dev\/null \|\| \{/,
    );
  });
});

describe('shellArgs', () => {
  it("reads tether's options up to the command, and none of the command's", () => {
    expect(shellArgs(['--workdir', '/tmp', 'ls', '-h', '--workdir', 'x'])).toEqual({
      workdir: '/tmp',
      help: false,
      command: ['ls', '-h', '--workdir', 'x'],
    });
    expect(shellArgs(['--workdir=/srv', 'python3', '--version'])).toEqual({
      workdir: '/srv',
      help: false,
      command: ['python3', '--version'],
    });
    expect(shellArgs(['--', '--workdir', 'x'])).toEqual({ help: false, command: ['--workdir', 'x'] });
    expect(shellArgs(['-h'])).toEqual({ help: true, command: [] });
    expect(shellArgs([])).toEqual({ help: false, command: [] });
  });

  it('names an option of its own it does not know, or a --workdir without a directory, instead of running it', () => {
    expect(shellArgs(['--workDir', '/tmp', 'pwd']).problem).toBe("unknown option '--workDir'; did you mean --workdir?");
    expect(shellArgs(['--work-dir=/tmp', 'pwd']).problem).toBe("unknown option '--work-dir'; did you mean --workdir?");
    expect(shellArgs(['-w', '/tmp', 'pwd']).problem).toBe(
      "unknown option '-w'; put -- before a command that starts with -",
    );
    expect(shellArgs(['--workdir']).problem).toBe("option '--workdir <dir>' argument missing");
    expect(shellArgs(['--', '-w']).problem).toBeUndefined();
  });
});
