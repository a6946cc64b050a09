import { defineConfig } from 'vitest/config';

// One project per package (unit tests beside the code) plus `integration` for test/, which drives real
// processes (sshd in a network namespace, sshfs, the agents) and therefore runs its files one at a time.
const shared = { resolve: { conditions: ['source'] }, ssr: { resolve: { conditions: ['source'] } } };
// Unit tests use real sockets and /proc too; on a loaded 2-core machine the 5 s default is too tight.
const unit = { testTimeout: 30_000, hookTimeout: 30_000 };

export default defineConfig({
  test: {
    projects: [
      { ...shared, test: { name: 'protocol', include: ['protocol/src/**/*.test.ts'], ...unit } },
      { ...shared, test: { name: 'guest', include: ['guest/src/**/*.test.ts'], ...unit } },
      { ...shared, test: { name: 'host', include: ['host/src/**/*.test.ts'], ...unit } },
      {
        ...shared,
        test: {
          name: 'integration',
          include: ['test/**/*.test.ts'],
          // The real-VM test builds a disk image and boots QEMU: `npm run test:vm` runs it on its own.
          exclude: ['test/vm/**'],
          fileParallelism: false,
          testTimeout: 120_000,
          hookTimeout: 120_000,
        },
      },
    ],
  },
});
