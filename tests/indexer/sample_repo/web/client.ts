import { fetchJson, HttpError } from "./http";

export interface Order {
  id: number;
  customerId: number;
}

/** Load one order; returns null when the server says it does not exist. */
export async function getOrder(id: number): Promise<Order | null> {
  try {
    return await fetchJson<Order>(`/api/orders/${id}`);
  } catch (error) {
    if (error instanceof HttpError && error.status === 404) {
      return null;
    }
    throw error;
  }
}
