import { defineConfig } from 'vitest/config';

// The real-VM end-to-end test on its own (`npx vitest run --config test/vm/vitest.vm.config.ts`): one file, long
// deadlines (TCG boots take minutes on a loaded machine), output shown as it comes so the timings are visible.
export default defineConfig({
  resolve: { conditions: ['source'] },
  ssr: { resolve: { conditions: ['source'] } },
  test: {
    name: 'vm',
    root: new URL('../..', import.meta.url).pathname,
    include: ['test/vm/**/*.test.ts'],
    fileParallelism: false,
    testTimeout: 30 * 60_000,
    hookTimeout: 5 * 60_000,
  },
});
