// The sync client: opens the sync-streamer's stream for the signed-in user, keeps every row it
// can see in a local store (memory, persisted through a `SyncStorage`), and tells subscribers
// what changed. It owns the protocol's duties (docs/sync.md): resume from its cursor, refresh
// the token before it expires, act on `reset`, `scope_removed` and `closed`, back off on errors.

import type { Change, CloseReason, Frame, RowData, StreamRefusal } from './frames.js'
import { isTombstone, rowIdOf, versionOf } from './frames.js'
import { readEvents } from './sse.js'
import type { StorageUpdate, StoredRow, SyncStorage } from './storage.js'
import { MemoryStorage, rowKey } from './storage.js'

/** What the api's `sync.token` returns. */
export interface SyncToken {
  readonly token: string
  /** Epoch milliseconds. */
  readonly expiresAt: number
}

/** Thrown by `getToken` when the user is signed out: the client stops (status `signed_out`). */
export class SignedOutError extends Error {
  constructor(message = 'signed out') {
    super(message)
    this.name = 'SignedOutError'
  }
}

export interface SyncClientOptions {
  /** The sync-streamer's base URL, e.g. `https://sync.example.com` or `http://localhost:8081`. */
  readonly url: string
  /** A fresh sync token: call the api's `sync.token` with the user's session. */
  readonly getToken: () => Promise<SyncToken>
  /** Only these tables (default: all the user can see). */
  readonly tables?: readonly string[]
  /** Where rows and cursor persist (default: memory only). */
  readonly storage?: SyncStorage
  /** Reconnect with a new token this long before the current one expires (default 60 s; at most half the token's lifetime). */
  readonly refreshBeforeExpiryMs?: number
  /** Back-off after a failure: from this (default 500 ms) ... */
  readonly minReconnectDelayMs?: number
  /** ... doubling up to this (default 30 s), with jitter. */
  readonly maxReconnectDelayMs?: number
  /** With no byte from the server for this long (heartbeats included), reconnect (default 45 s). */
  readonly idleTimeoutMs?: number
  /** Every frame as received, for diagnostics. */
  readonly onFrame?: (frame: Frame) => void
  /** Defaults to the global `fetch`. */
  readonly fetch?: typeof fetch
}

export type SyncStatus =
  /** Not started, or stopped. */
  | 'stopped'
  | 'connecting'
  /** Receiving the rows it missed. */
  | 'catching_up'
  | 'live'
  /** Waiting to reconnect after a failure or a server close. */
  | 'waiting'
  /** `getToken` threw `SignedOutError` or the session was revoked: sign in, then `start()`. */
  | 'signed_out'

/** One row version, delivered to subscribers once. */
export interface RowChange {
  readonly table: string
  readonly rowId: string
  readonly version: number
  /** A tombstone, or a row dropped with its team's scope. */
  readonly deleted: boolean
  readonly data: RowData
}

export type SyncEvent =
  | { readonly type: 'changes'; readonly changes: readonly RowChange[] }
  | { readonly type: 'status'; readonly status: SyncStatus }
  /** The first catch-up of a connection is complete: the store is current as of `cursor`. */
  | { readonly type: 'caught_up'; readonly cursor: string }
  /** The cursor was too old for the server: the local copy was dropped (its rows were just sent as deleted `changes`); a full catch-up follows. */
  | { readonly type: 'reset' }
  /** The user left (or was removed from) a team: its rows were dropped (also sent as `changes`). */
  | { readonly type: 'scope_removed'; readonly teamId: string; readonly removed: number }
  /** The server ended the stream; the client acts on the reason by itself. */
  | { readonly type: 'closed'; readonly reason: CloseReason }
  /** A failure the client recovers from by itself (it retries); for logs and indicators. */
  | { readonly type: 'error'; readonly error: Error; readonly refusal?: StreamRefusal }

export type SyncListener = (event: SyncEvent) => void

/** Why one connection ended, and what to do next. */
type Outcome =
  | { readonly next: 'reconnect'; readonly newToken: boolean; readonly delay: boolean }
  | { readonly next: 'signed_out' }
  | { readonly next: 'stopped' }

class RefusedError extends Error {
  readonly refusal: StreamRefusal
  constructor(refusal: StreamRefusal) {
    super(`${refusal.status} ${refusal.code}: ${refusal.message}`)
    this.name = 'RefusedError'
    this.refusal = refusal
  }
}

export class SyncClient {
  readonly #options: SyncClientOptions
  readonly #storage: SyncStorage
  readonly #fetch: typeof fetch
  readonly #rows = new Map<string, StoredRow>()
  readonly #listeners = new Set<SyncListener>()
  #cursor: string | null = null
  #status: SyncStatus = 'stopped'
  #token: SyncToken | undefined
  #loaded: Promise<void> | undefined
  #running: Promise<void> | undefined
  #stop: AbortController | undefined
  /** Storage writes, in order. */
  #writes: Promise<void> = Promise.resolve()

  constructor(options: SyncClientOptions) {
    this.#options = options
    this.#storage = options.storage ?? new MemoryStorage()
    this.#fetch = options.fetch ?? globalThis.fetch.bind(globalThis)
  }

  get status(): SyncStatus {
    return this.#status
  }

  /** The stream cursor the store is at (`null` before anything arrived). */
  get cursor(): string | null {
    return this.#cursor
  }

  /** Load the persisted copy (rows readable before the network answers). `start()` calls it. */
  load(): Promise<void> {
    this.#loaded ??= (async () => {
      const state = await this.#storage.load()
      if (state) {
        this.#cursor = state.cursor
        for (const row of state.rows) {
          this.#rows.set(rowKey(row.table, row.rowId), row)
        }
      }
    })()
    return this.#loaded
  }

  /** Start following the stream (a no-op when running). */
  async start(): Promise<void> {
    if (this.#running) {
      return
    }
    await this.load()
    const stop = new AbortController()
    this.#stop = stop
    this.#running = this.#run(stop.signal).finally(() => {
      this.#running = undefined
    })
  }

  /** Stop following; the store and its persisted copy stay. */
  async stop(): Promise<void> {
    this.#stop?.abort()
    await this.#running
    await this.#writes
  }

  /** Stop and drop the local copy (sign-out). */
  async clear(): Promise<void> {
    await this.stop()
    this.#rows.clear()
    this.#cursor = null
    await this.#storage.clear()
  }

  /** Live rows of a table (tombstones left out). */
  rows(table: string): RowData[] {
    const rows: RowData[] = []
    for (const row of this.#rows.values()) {
      if (row.table === table && !row.deleted) {
        rows.push(row.data)
      }
    }
    return rows
  }

  /** One live row. */
  get(table: string, rowId: string): RowData | undefined {
    const row = this.#rows.get(rowKey(table, rowId))
    return row && !row.deleted ? row.data : undefined
  }

  /** Call `listener` with every event; returns the unsubscribe function. */
  subscribe(listener: SyncListener): () => void {
    this.#listeners.add(listener)
    return () => {
      this.#listeners.delete(listener)
    }
  }

  /** Resolves once every storage write so far has finished. */
  flushed(): Promise<void> {
    return this.#writes
  }

  #emit(event: SyncEvent): void {
    for (const listener of this.#listeners) {
      try {
        listener(event)
      } catch (error) {
        // A listener's bug must not stop the sync.
        console.error('sync listener failed', error)
      }
    }
  }

  #setStatus(status: SyncStatus): void {
    if (status !== this.#status) {
      this.#status = status
      this.#emit({ type: 'status', status })
    }
  }

  #persist(update: StorageUpdate): void {
    this.#writes = this.#writes
      .then(() => this.#storage.apply(update))
      .catch((error: unknown) => {
        this.#emit({ type: 'error', error: error instanceof Error ? error : new Error(String(error)) })
      })
  }

  async #run(signal: AbortSignal): Promise<void> {
    let failures = 0
    let newToken = this.#token === undefined
    while (!signal.aborted) {
      this.#setStatus('connecting')
      let outcome: Outcome
      try {
        if (newToken || !this.#token || this.#token.expiresAt - Date.now() < 5_000) {
          this.#token = await this.#options.getToken()
        }
        outcome = await this.#connect(this.#token, signal, () => {
          failures = 0
        })
      } catch (error) {
        if (error instanceof SignedOutError) {
          outcome = { next: 'signed_out' }
        } else if (signal.aborted) {
          outcome = { next: 'stopped' }
        } else {
          const refusal = error instanceof RefusedError ? error.refusal : undefined
          this.#emit({
            type: 'error',
            error: error instanceof Error ? error : new Error(String(error)),
            ...(refusal ? { refusal } : {}),
          })
          outcome = this.#afterRefusal(refusal)
        }
      }
      if (outcome.next === 'stopped') {
        break
      }
      if (outcome.next === 'signed_out') {
        this.#setStatus('signed_out')
        return
      }
      newToken = outcome.newToken
      if (outcome.delay) {
        failures += 1
        this.#setStatus('waiting')
        await this.#sleep(this.#backoff(failures), signal)
      }
    }
    this.#setStatus('stopped')
  }

  #afterRefusal(refusal: StreamRefusal | undefined): Outcome {
    switch (refusal?.code) {
      case 'SESSION_REVOKED':
        return { next: 'signed_out' }
      case 'UNAUTHORIZED':
      case 'INVALID_SYNC_TOKEN':
      case 'SYNC_TOKEN_EXPIRED':
      case 'SYNC_TOKEN_STALE':
      case 'SYNC_TOKEN_LIFETIME_TOO_LONG':
      case 'SYNC_TOKEN_NOT_YET_VALID':
        return { next: 'reconnect', newToken: true, delay: true }
      default:
        // Network errors, 429 TOO_MANY_STREAMS, 503: the same token, after a pause.
        return { next: 'reconnect', newToken: false, delay: true }
    }
  }

  #backoff(failures: number): number {
    const min = this.#options.minReconnectDelayMs ?? 500
    const max = this.#options.maxReconnectDelayMs ?? 30_000
    const base = Math.min(max, min * 2 ** Math.min(failures - 1, 16))
    return base / 2 + Math.random() * (base / 2)
  }

  #sleep(ms: number, signal: AbortSignal): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(done, ms)
      function done(): void {
        clearTimeout(timer)
        signal.removeEventListener('abort', done)
        resolve()
      }
      signal.addEventListener('abort', done, { once: true })
    })
  }

  /** One connection, until it ends. `connected` is called once the server accepted it. */
  async #connect(token: SyncToken, stopSignal: AbortSignal, connected: () => void): Promise<Outcome> {
    const connection = new AbortController()
    const abort = (): void => connection.abort()
    stopSignal.addEventListener('abort', abort, { once: true })
    // Reconnect with a fresh token before this one expires (the server would close the stream).
    const lifetime = token.expiresAt - Date.now()
    const margin = Math.min(this.#options.refreshBeforeExpiryMs ?? 60_000, lifetime / 2)
    let refreshing = false
    const refreshTimer = setTimeout(() => {
      refreshing = true
      connection.abort()
    }, Math.max(0, lifetime - margin))
    let idle = false
    const idleTimeout = this.#options.idleTimeoutMs ?? 45_000
    let idleTimer = setTimeout(onIdle, idleTimeout)
    function onIdle(): void {
      idle = true
      connection.abort()
    }
    const touch = (): void => {
      clearTimeout(idleTimer)
      idleTimer = setTimeout(onIdle, idleTimeout)
    }
    try {
      const url = new URL('/sync/stream', this.#options.url)
      if (this.#cursor !== null) {
        url.searchParams.set('since', this.#cursor)
      }
      if (this.#options.tables) {
        url.searchParams.set('tables', this.#options.tables.join(','))
      }
      let response: Response
      try {
        response = await this.#fetch(url, {
          headers: { authorization: `Bearer ${token.token}`, accept: 'text/event-stream' },
          signal: connection.signal,
          cache: 'no-store',
        })
      } catch (error) {
        return this.#ended(stopSignal, refreshing, idle, error)
      }
      if (!response.ok || !response.body) {
        throw new RefusedError(await refusalOf(response))
      }
      connected()
      this.#setStatus('catching_up')
      try {
        for await (const event of readEvents(response.body)) {
          touch()
          let frame: Frame
          try {
            frame = JSON.parse(event.data) as Frame
          } catch {
            continue
          }
          this.#options.onFrame?.(frame)
          const closed = this.#apply(frame)
          if (closed) {
            return this.#afterClose(closed)
          }
        }
      } catch (error) {
        return this.#ended(stopSignal, refreshing, idle, error)
      }
      // The server ended the stream without a `closed` frame (a cut): resume from the cursor.
      return this.#ended(stopSignal, refreshing, idle, new Error('the stream ended'))
    } finally {
      clearTimeout(refreshTimer)
      clearTimeout(idleTimer)
      stopSignal.removeEventListener('abort', abort)
      // Release the connection now (after a `closed` frame the body may still be open).
      connection.abort()
    }
  }

  #ended(stopSignal: AbortSignal, refreshing: boolean, idle: boolean, error: unknown): Outcome {
    if (stopSignal.aborted) {
      return { next: 'stopped' }
    }
    if (refreshing) {
      return { next: 'reconnect', newToken: true, delay: false }
    }
    const reason = idle ? new Error('no data from the server within the idle timeout') : error
    this.#emit({ type: 'error', error: reason instanceof Error ? reason : new Error(String(reason)) })
    return { next: 'reconnect', newToken: false, delay: true }
  }

  #afterClose(reason: CloseReason): Outcome {
    this.#emit({ type: 'closed', reason })
    switch (reason) {
      case 'session_revoked':
        return { next: 'signed_out' }
      case 'token_expired':
      case 'scopes_changed':
        // A join needs a token that lists the new team.
        return { next: 'reconnect', newToken: true, delay: false }
      case 'shutdown':
        return { next: 'reconnect', newToken: false, delay: false }
      case 'slow_client':
        return { next: 'reconnect', newToken: false, delay: true }
    }
  }

  /** Apply one frame; returns the close reason of a `closed` frame. */
  #apply(frame: Frame): CloseReason | undefined {
    switch (frame.type) {
      case 'delta': {
        const changes: RowChange[] = []
        if (frame.table !== null) {
          for (const data of frame.data) {
            const rowId = rowIdOf(frame.table, data)
            if (rowId !== undefined) {
              this.#accept(frame.table, rowId, versionOf(data), data, changes)
            }
          }
        }
        this.#commit(changes, [], frame.cursor)
        if (frame.isLastChunk) {
          this.#setStatus('live')
          this.#emit({ type: 'caught_up', cursor: frame.cursor })
        }
        return undefined
      }
      case 'change': {
        const changes: RowChange[] = []
        for (const change of frame.changes) {
          this.#acceptChange(change, changes)
        }
        this.#commit(changes, [], frame.cursor)
        return undefined
      }
      case 'scope_removed': {
        const removed: RowChange[] = []
        const keys: string[] = []
        for (const [key, row] of this.#rows) {
          if (row.data['teamId'] === frame.teamId) {
            this.#rows.delete(key)
            keys.push(key)
            if (!row.deleted) {
              removed.push({ ...row, deleted: true })
            }
          }
        }
        this.#commit(removed, keys, frame.cursor, false)
        this.#emit({ type: 'scope_removed', teamId: frame.teamId, removed: removed.length })
        return undefined
      }
      case 'reset': {
        const dropped: RowChange[] = []
        for (const row of this.#rows.values()) {
          if (!row.deleted) {
            dropped.push({ ...row, deleted: true })
          }
        }
        this.#rows.clear()
        this.#cursor = null
        this.#writes = this.#writes.then(() => this.#storage.clear()).catch(() => undefined)
        // The dropped rows go out as deletions first; after `reset`, every row is new again.
        if (dropped.length > 0) {
          this.#emit({ type: 'changes', changes: dropped })
        }
        this.#emit({ type: 'reset' })
        return undefined
      }
      case 'heartbeat':
        return undefined
      case 'closed':
        return frame.reason
    }
  }

  #acceptChange(change: Change, into: RowChange[]): void {
    this.#accept(change.table, change.rowId, change.version, change.data, into)
  }

  /** Keep the higher version; a version seen before (e.g. in two scopes) is not delivered again. */
  #accept(table: string, rowId: string, version: number, data: RowData, into: RowChange[]): void {
    const key = rowKey(table, rowId)
    const current = this.#rows.get(key)
    if (current && current.version >= version) {
      return
    }
    const row: StoredRow = { table, rowId, version, deleted: isTombstone(data), data }
    this.#rows.set(key, row)
    // The same row twice in one frame: deliver its latest version once.
    const earlier = into.findIndex((change) => change.table === table && change.rowId === rowId)
    if (earlier >= 0) {
      into.splice(earlier, 1)
    }
    into.push(row)
  }

  #commit(changes: RowChange[], removedKeys: string[], cursor: string, putChanges = true): void {
    this.#cursor = cursor
    this.#persist({ cursor, put: putChanges ? changes : [], remove: removedKeys })
    if (changes.length > 0) {
      this.#emit({ type: 'changes', changes })
    }
  }
}

async function refusalOf(response: Response): Promise<StreamRefusal> {
  try {
    const body = (await response.json()) as Partial<StreamRefusal>
    return {
      code: typeof body.code === 'string' ? body.code : 'HTTP_ERROR',
      status: response.status,
      message: typeof body.message === 'string' ? body.message : response.statusText,
    }
  } catch {
    return { code: 'HTTP_ERROR', status: response.status, message: response.statusText }
  }
}
