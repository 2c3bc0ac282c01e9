// Money on the dashboard: the API sends exact decimal strings ("0.0002505"); the page formats them with
// BigInt arithmetic and never with floats, and never computes an amount of its own.
//
// THE RULE (one format for every amount on every view):
//   dollars and cents, rounded half-up to the cent, with thousands separators: $1,234.57, -$0.97;
//   zero is $0.00; an amount that is not zero but rounds to $0.00 is shown as <$0.01 (-<$0.01 below
//   zero), so usage never reads as free; no amount (unpriced usage) is shown as an em dash.
// The exact figure is in each amount's tooltip (its `title`) and in the downloadable documents.
// Unit prices on the rate card view are prices, not amounts: they are shown exactly as the card has them.

export const PICO_PER_USD = 10n ** 12n;
const PICO_PER_CENT = 10n ** 10n;
const DECIMAL = /^(-)?(\d+)(?:\.(\d{1,12}))?$/;

export const MONEY_RULE = "Amounts are in US dollars, rounded half-up to the cent; <$0.01 means less than a cent "
  + "but not zero; — means unpriced. Hover over an amount for its exact value.";

// An exact decimal string from the API -> integer pico-dollars. Anything else is an error, never a guess.
export function toPico(text) {
  if (typeof text === "bigint") return text;
  const match = DECIMAL.exec(String(text));
  if (!match) throw new TypeError(`not a money amount: ${JSON.stringify(text)}`);
  const value = BigInt(match[2]) * PICO_PER_USD + BigInt((match[3] ?? "").padEnd(12, "0"));
  return match[1] ? -value : value;
}

function groupThousands(digits) {
  return digits.replace(/\B(?=(\d{3})+(?!\d))/g, ",");
}

// The one money format (see THE RULE above). `value`: a decimal string, a BigInt of pico-dollars, or
// null/undefined for "no amount".
export function usd(value) {
  if (value === null || value === undefined) return "—";
  const pico = toPico(value);
  const negative = pico < 0n;
  const magnitude = negative ? -pico : pico;
  const cents = (magnitude + PICO_PER_CENT / 2n) / PICO_PER_CENT;
  const sign = negative ? "-" : "";
  if (cents === 0n) return magnitude === 0n ? "$0.00" : `${sign}<$0.01`;
  const text = cents.toString().padStart(3, "0");
  return `${sign}$${groupThousands(text.slice(0, -2))}.${text.slice(-2)}`;
}

// Whole cents for a chart axis: the smallest "nice" step (1, 2 or 5 x 10^k cents) that splits `maxPico`
// into at most `ticks` steps. Placement only; the figures themselves come from the API.
export function axisStepPico(maxPico, ticks = 4) {
  let step = PICO_PER_CENT;
  for (;;) {
    for (const m of [1n, 2n, 5n]) {
      if (step * m * BigInt(ticks) >= maxPico) return step * m;
    }
    step *= 10n;
  }
}
