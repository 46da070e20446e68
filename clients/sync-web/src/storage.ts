// Where the client keeps its copy between page loads: the rows and the cursor they are at,
// written together so a reload never resumes from a cursor whose rows were not saved.

import type { RowData } from './frames.js'

/** One row version as stored (tombstones are kept so an older version cannot come back). */
export interface StoredRow {
  readonly table: string
  readonly rowId: string
  readonly version: number
  readonly deleted: boolean
  readonly data: RowData
}

export interface PersistedState {
  /** The stream cursor the rows are at; `null` when nothing was received yet. */
  readonly cursor: string | null
  readonly rows: readonly StoredRow[]
}

/** One atomic step: upsert these rows, delete those keys, then record the cursor. */
export interface StorageUpdate {
  readonly cursor: string | null
  readonly put: readonly StoredRow[]
  readonly remove: readonly string[]
}

/** The persistence hook. Keys are `rowKey(table, rowId)`. */
export interface SyncStorage {
  load(): Promise<PersistedState | null>
  apply(update: StorageUpdate): Promise<void>
  clear(): Promise<void>
}

export function rowKey(table: string, rowId: string): string {
  return `${table}/${rowId}`
}

/** Keeps nothing across page loads: every start catches up from the beginning. */
export class MemoryStorage implements SyncStorage {
  async load(): Promise<PersistedState | null> {
    return null
  }
  async apply(): Promise<void> {}
  async clear(): Promise<void> {}
}

const ROWS = 'rows'
const META = 'meta'
const CURSOR_KEY = 'cursor'

function promised<T>(request: IDBRequest<T>): Promise<T> {
  return new Promise((resolve, reject) => {
    request.onsuccess = () => resolve(request.result)
    request.onerror = () => reject(request.error ?? new Error('IndexedDB request failed'))
  })
}

function completed(transaction: IDBTransaction): Promise<void> {
  return new Promise((resolve, reject) => {
    transaction.oncomplete = () => resolve()
    transaction.onabort = () => reject(transaction.error ?? new Error('IndexedDB transaction aborted'))
    transaction.onerror = () => reject(transaction.error ?? new Error('IndexedDB transaction failed'))
  })
}

/**
 * Rows and cursor in IndexedDB (one database per signed-in user: name it after the user, and
 * call `clear()` at sign-out). Each update is one readwrite transaction over both stores.
 */
export class IndexedDbStorage implements SyncStorage {
  readonly #name: string
  #db: Promise<IDBDatabase> | undefined

  constructor(databaseName: string) {
    this.#name = databaseName
  }

  #open(): Promise<IDBDatabase> {
    this.#db ??= new Promise((resolve, reject) => {
      const request = indexedDB.open(this.#name, 1)
      request.onupgradeneeded = () => {
        const db = request.result
        if (!db.objectStoreNames.contains(ROWS)) {
          db.createObjectStore(ROWS)
        }
        if (!db.objectStoreNames.contains(META)) {
          db.createObjectStore(META)
        }
      }
      request.onsuccess = () => resolve(request.result)
      request.onerror = () => reject(request.error ?? new Error(`cannot open IndexedDB ${this.#name}`))
    })
    return this.#db
  }

  async load(): Promise<PersistedState | null> {
    const db = await this.#open()
    const transaction = db.transaction([ROWS, META], 'readonly')
    const rows = (await promised(transaction.objectStore(ROWS).getAll())) as StoredRow[]
    const cursor = (await promised(transaction.objectStore(META).get(CURSOR_KEY))) as string | undefined
    if (cursor === undefined && rows.length === 0) {
      return null
    }
    return { cursor: cursor ?? null, rows }
  }

  async apply(update: StorageUpdate): Promise<void> {
    const db = await this.#open()
    const transaction = db.transaction([ROWS, META], 'readwrite')
    const done = completed(transaction)
    const rows = transaction.objectStore(ROWS)
    for (const key of update.remove) {
      rows.delete(key)
    }
    for (const row of update.put) {
      rows.put(row, rowKey(row.table, row.rowId))
    }
    const meta = transaction.objectStore(META)
    if (update.cursor === null) {
      meta.delete(CURSOR_KEY)
    } else {
      meta.put(update.cursor, CURSOR_KEY)
    }
    await done
  }

  async clear(): Promise<void> {
    const db = await this.#open()
    const transaction = db.transaction([ROWS, META], 'readwrite')
    const done = completed(transaction)
    transaction.objectStore(ROWS).clear()
    transaction.objectStore(META).clear()
    await done
  }
}
