// What every script here shares: its settings from the environment, named checks that report
// `ok`/`FAILED` and let the rest run, and waiting for a condition. Each script ends with
// `checks.finish('<name>: all checks passed')`, the line its Rust test looks for.

/** An environment variable the Rust test sets; exits 2 when it is missing. */
export function required(name: string): string {
  const value = process.env[name]
  if (!value) {
    console.error(`${name} must be set`)
    process.exit(2)
  }
  return value
}

export interface ChecksOptions {
  /** How a failure is printed (default: the error's stack). */
  readonly describe?: (error: unknown) => string
  /** Skip the checks after a failure (when each builds on the state the previous left). */
  readonly stopAfterFailure?: boolean
}

export class Checks {
  readonly #options: ChecksOptions
  #failed = false

  constructor(options: ChecksOptions = {}) {
    this.#options = options
  }

  get failed(): boolean {
    return this.#failed
  }

  async check(name: string, body: () => Promise<void>): Promise<void> {
    if (this.#failed && this.#options.stopAfterFailure) {
      console.log(`skipped ${name} (an earlier check failed)`)
      return
    }
    try {
      await body()
      console.log(`ok      ${name}`)
    } catch (error) {
      this.#failed = true
      console.log(`FAILED  ${name}`)
      console.log((this.#options.describe ?? describeError)(error))
    }
  }

  /** Exit 1 after a failure; otherwise print the success line. */
  finish(successLine: string): void {
    if (this.#failed) {
      process.exit(1)
    }
    console.log(successLine)
  }
}

export function describeError(error: unknown): string {
  return error instanceof Error ? (error.stack ?? error.message) : String(error)
}

/** Poll `probe` until it returns a value; throws after `timeoutMs`. */
export async function until<T>(what: string, probe: () => Promise<T | undefined>, timeoutMs = 20_000): Promise<T> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const value = await probe()
    if (value !== undefined) {
      return value
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)
    }
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
}
