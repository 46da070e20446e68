// The server's checks of input strings and instants, for the generated zod schemas
// (`schemas.ts`): what JSON Schema has no keyword for, as the api states it in the contract's
// `x-text` extension and formats (services/api/src/contract/mod.rs). Hand-written; the
// contract's property test (services/api/tests/contract_property.rs) proves that the server
// and these schemas agree.

import { z } from 'zod'

/** The server's own checks of a string (`x-text`). */
export interface Checked {
  /** The other checks apply to the value without leading and trailing white space. */
  readonly trim: boolean
  /** In characters (code points). */
  readonly minLength?: number
  readonly maxLength?: number
  /** In bytes of UTF-8. */
  readonly maxBytes?: number
  /** `email`, `http-url`, `cidr` (`cidr` is checked by the server only). */
  readonly format?: string
  /** The ASCII-lowercased value is one of these. */
  readonly lowercaseOneOf?: readonly string[]
}

/** A string input: JSON Schema's keywords (lengths in code points) and the server's checks. */
export interface TextRules {
  readonly minLength?: number
  readonly maxLength?: number
  readonly pattern?: string
  /** `uuid`, `date` (`YYYY-MM-DD`, a calendar date), `timezone` (with an enum). */
  readonly format?: string
  readonly checked?: Checked
}

// Rust's `char::is_whitespace` (Unicode White_Space), which `str::trim` removes; JavaScript's
// `trim` also removes U+FEFF, which the server keeps.
const WHITE_SPACE = '\\t\\n\\u000B\\f\\r \\u0085\\u00A0\\u1680\\u2000-\\u200A\\u2028\\u2029\\u202F\\u205F\\u3000'
const TRIM = new RegExp(`^[${WHITE_SPACE}]+|[${WHITE_SPACE}]+$`, 'gu')
const HAS_WHITE_SPACE = new RegExp(`[${WHITE_SPACE}]`, 'u')

/** `str::trim`. */
export function rustTrim(value: string): string {
  return value.replace(TRIM, '')
}

/** The length the server counts: Unicode scalar values. */
export function characters(value: string): number {
  let count = 0
  for (const _ of value) {
    count += 1
  }
  return count
}

const encoder = new TextEncoder()
const UUID = /^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$/
const DATE = /^(\d{4})-(\d{2})-(\d{2})$/

function isDate(value: string): boolean {
  const match = DATE.exec(value)
  if (!match) {
    return false
  }
  const [year, month, day] = [Number(match[1]), Number(match[2]), Number(match[3])]
  const date = new Date(0)
  date.setUTCFullYear(year, month - 1, day)
  return date.getUTCFullYear() === year && date.getUTCMonth() === month - 1 && date.getUTCDate() === day
}

/** The server's `check_email`: something@domain.tld without white space. */
function isEmail(value: string): boolean {
  const at = value.indexOf('@')
  if (at < 0) {
    return false
  }
  const domain = value.slice(at + 1)
  return at > 0 && domain.includes('.') && !domain.startsWith('.') && !domain.endsWith('.') && !HAS_WHITE_SPACE.test(value)
}

/** The server's `check_http_url`: an absolute http(s) URL with a host. */
function isHttpUrl(value: string): boolean {
  try {
    const url = new URL(value)
    return (url.protocol === 'http:' || url.protocol === 'https:') && url.hostname !== ''
  } catch {
    return false
  }
}

function formatError(format: string, value: string): string | undefined {
  switch (format) {
    case 'uuid':
      return UUID.test(value) ? undefined : 'Invalid UUID'
    case 'date':
      return isDate(value) ? undefined : 'Invalid date: expected YYYY-MM-DD'
    case 'email':
      return isEmail(value) ? undefined : 'Invalid email address'
    case 'http-url':
      return isHttpUrl(value) ? undefined : 'Invalid URL: expected an absolute http(s) URL'
    default:
      // `timezone` comes with its enum; `cidr` is the server's to check.
      return undefined
  }
}

type Context = z.core.$RefinementCtx<string>

function lengths(value: string, min: number | undefined, max: number | undefined, context: Context): void {
  const length = characters(value)
  if (min !== undefined && length < min) {
    context.addIssue({ code: 'too_small', origin: 'string', minimum: min, inclusive: true, input: value, message: `Too small: expected string to have >=${min} characters` })
  }
  if (max !== undefined && length > max) {
    context.addIssue({ code: 'too_big', origin: 'string', maximum: max, inclusive: true, input: value, message: `Too big: expected string to have <=${max} characters` })
  }
}

function format(value: string, name: string | undefined, context: Context): void {
  const error = name === undefined ? undefined : formatError(name, value)
  if (error !== undefined) {
    context.addIssue({ code: 'custom', input: value, message: error, params: { format: name } })
  }
}

/** A string input as the server checks it. */
export function text(rules: TextRules) {
  const pattern = rules.pattern === undefined ? undefined : new RegExp(rules.pattern, 'u')
  return z.string().superRefine((value, context) => {
    if (value.includes('\u0000')) {
      context.addIssue({ code: 'custom', input: value, message: 'Invalid string: must not contain the NUL character (U+0000)' })
      return
    }
    lengths(value, rules.minLength, rules.maxLength, context)
    if (pattern && !pattern.test(value)) {
      context.addIssue({ code: 'custom', input: value, message: `Invalid string: must match ${rules.pattern}` })
    }
    format(value, rules.format, context)
    const checked = rules.checked
    if (checked) {
      const subject = checked.trim ? rustTrim(value) : value
      lengths(subject, checked.minLength, checked.maxLength, context)
      if (checked.maxBytes !== undefined && encoder.encode(subject).length > checked.maxBytes) {
        context.addIssue({ code: 'custom', input: value, message: `Too big: expected at most ${checked.maxBytes} bytes` })
      }
      format(subject, checked.format, context)
      const lower = subject.replace(/[A-Z]+/g, (letters) => letters.toLowerCase())
      if (checked.lowercaseOneOf && !checked.lowercaseOneOf.includes(lower)) {
        context.addIssue({ code: 'custom', input: value, message: `Invalid option: expected one of ${checked.lowercaseOneOf.join(', ')}` })
      }
    }
  })
}

/** An instant: epoch milliseconds, or a `Date` (oRPC sends it as one), within the range. */
export function instant(range: { readonly minimum: number; readonly maximum: number }) {
  return z.union([
    z.int().min(range.minimum).max(range.maximum),
    z.date().min(new Date(range.minimum)).max(new Date(range.maximum)),
  ])
}

/** No item twice. */
export function distinct(items: readonly unknown[]): boolean {
  return new Set(items).size === items.length
}
