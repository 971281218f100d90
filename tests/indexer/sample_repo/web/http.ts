/** Minimal HTTP helpers shared by the web client. */

export class HttpError extends Error {
  constructor(public status: number, message: string) {
    super(message);
  }
}

/** Fetch a URL and parse the JSON body, throwing HttpError on a non-2xx status. */
export async function fetchJson<T>(url: string, init?: RequestInit): Promise<T> {
  const response = await fetch(url, init);
  if (!response.ok) {
    throw new HttpError(response.status, await response.text());
  }
  return (await response.json()) as T;
}
