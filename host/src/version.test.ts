import { describe, expect, it } from 'vitest';
import { otherBuild } from './version.js';

describe('otherBuild', () => {
  it('tells an agent running other code than this command, and nothing when either build is unknown', () => {
    expect(otherBuild('aaaa', 'bbbb')).toBe(
      'the agent runs another build of tether (aaaa) than this command (bbbb): it was started before tether was rebuilt or upgraded',
    );
    expect(otherBuild('aaaa', 'aaaa')).toBeNull();
    expect(otherBuild(null, 'bbbb')).toBeNull();
    expect(otherBuild(undefined, 'bbbb')).toBeNull(); // an agent from before builds were reported
    expect(otherBuild('aaaa', null)).toBeNull(); // run from sources
  });
});
