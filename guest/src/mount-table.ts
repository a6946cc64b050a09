// How the kernel's mount tables (/proc/self/mountinfo, /proc/mounts) write paths, for the parts of the agent that read
// them (the inotify applier's sshfs check, the listen events' tracefs lookup).

/** The mount tables write space, tab, newline and backslash in paths as octal escapes (`\040`). */
export function unescapeMountPath(path: string): string {
  return path.replace(/\\([0-7]{3})/g, (_, oct: string) => String.fromCharCode(Number.parseInt(oct, 8)));
}
