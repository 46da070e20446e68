// @journal/sync-web: follow the journal sync-streamer from a web app (README.md).

export { SignedOutError, SyncClient } from './client.js'
export type { RowChange, SyncClientOptions, SyncEvent, SyncListener, SyncStatus, SyncToken } from './client.js'
export { isTombstone, rowIdOf, versionOf } from './frames.js'
export type { Change, ChangeOp, CloseReason, Frame, RowData, StreamRefusal } from './frames.js'
export { IndexedDbStorage, MemoryStorage, rowKey } from './storage.js'
export type { PersistedState, StorageUpdate, StoredRow, SyncStorage } from './storage.js'
