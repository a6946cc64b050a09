// What tether says when a guest script never ran: the login shell's own signs are told apart from a script's failure.
import { describe, expect, it } from 'vitest';
import { unrunScript } from './unrun-script.js';

const result = (code: number | null, stdout: string, stderr: string) => ({ code, stdout, stderr });

describe('unrunScript', () => {
  it('names csh and tcsh, which end a quoted argument at its first newline', () => {
    expect(unrunScript(result(1, '', "Unmatched '''.\nIllegal variable name.\nUnmatched '''.\n"))).toMatch(
      /login shell looks like csh or tcsh.*\(it says: Unmatched '''\.\); give the SSH user sh, bash, zsh or fish/,
    );
  });

  it('names a restricted shell, which refuses exec', () => {
    expect(unrunScript(result(1, '', 'rbash: line 1: exec: restricted\n'))).toMatch(/restricted shell \(rbash\)/);
  });

  it('names a login that ends before the command: status 0 and nothing said, or only what an rc file printed', () => {
    expect(unrunScript(result(0, '', ''))).toMatch(/ran none of tether's command: .*~\/\.bashrc.*ForceCommand/);
    expect(unrunScript(result(0, 'Welcome!\n', ''))).toMatch(
      /ran none of tether's command \(all it printed: "Welcome!"\)/,
    );
  });

  it("leaves a script's own failure to its own words", () => {
    expect(unrunScript(result(2, '', 'sh: 1: mkdir: Permission denied\n'))).toBeNull();
    expect(unrunScript(result(0, '', 'awk: not found\n'))).toBeNull();
    expect(unrunScript(result(null, '', ''))).toBeNull();
  });
});
