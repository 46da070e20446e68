// A minimal Server-Sent Events reader over a fetch body (the stream is opened with `fetch`,
// not `EventSource`, so the token travels in `Authorization` and refusals can be read).

export interface SseEvent {
  readonly id: string | undefined
  readonly data: string
}

/** Yields each event with a `data:` field; comments and other fields are skipped. */
export async function* readEvents(body: ReadableStream<Uint8Array>): AsyncGenerator<SseEvent> {
  const reader = body.getReader()
  const decoder = new TextDecoder()
  let buffer = ''
  let data: string[] = []
  let id: string | undefined
  try {
    for (;;) {
      const { value, done } = await reader.read()
      if (!done) {
        buffer += decoder.decode(value, { stream: true })
      }
      let newline = lineEnd(buffer, done)
      while (newline >= 0) {
        const line = buffer.slice(0, newline)
        const width = buffer.startsWith('\r\n', newline) ? 2 : 1
        buffer = buffer.slice(newline + width)
        if (line === '') {
          if (data.length > 0) {
            yield { id, data: data.join('\n') }
          }
          data = []
          id = undefined
        } else if (!line.startsWith(':')) {
          const colon = line.indexOf(':')
          const field = colon < 0 ? line : line.slice(0, colon)
          let value = colon < 0 ? '' : line.slice(colon + 1)
          if (value.startsWith(' ')) {
            value = value.slice(1)
          }
          if (field === 'data') {
            data.push(value)
          } else if (field === 'id') {
            id = value
          }
        }
        newline = lineEnd(buffer, done)
      }
      if (done) {
        return
      }
    }
  } finally {
    reader.releaseLock()
  }
}

/**
 * Where the first line of `buffer` ends (`\r\n`, `\r` or `\n`), or -1 when no line is complete.
 * A `\r` that ends the buffer is not an end yet unless the body ended (`final`): the next chunk
 * may begin with the `\n` of the same `\r\n`, which read alone would end an empty line and
 * dispatch the event early.
 */
export function lineEnd(buffer: string, final = false): number {
  const index = buffer.search(/\r\n|\r|\n/)
  return !final && index === buffer.length - 1 && buffer[index] === '\r' ? -1 : index
}
