// image-gateway's responses as openai-node's own types plus exactly our additions.
//
// tests/e2e/test_node_sdk_types.py writes every body a live gateway produced into a file that
// checks it with `satisfies` against these types (TypeScript's excess-property check then
// refuses any field that is neither the SDK's nor listed here) and assigns it to the plain
// SDK type, then runs `tsc --noEmit`.
import type {
  Image,
  ImageEditCompletedEvent,
  ImageGenCompletedEvent,
  ImagesResponse,
} from 'openai/resources/images';
import type { Model } from 'openai/resources/models';
import type { ErrorObject } from 'openai/resources/shared';

/** `usage.cost.total_cost`: the exact USD amount charged for the request (SPEC 1.1). */
export type Cost = { cost: { total_cost: number } };
export type TokenDetails = { image_tokens: number; text_tokens: number };

export type GatewayImagesResponse = Omit<ImagesResponse, 'data' | 'usage'> & {
  /** the model id the request named */
  model: string;
  /** `index`: the image's position, as in the stream events */
  data: Array<Image & { index: number }>;
  usage: ImagesResponse.Usage & Cost;
};

/** The stream events' `usage` lacks `output_tokens_details`; we send it where known. */
type EventUsage<U> = U & Cost & { output_tokens_details?: TokenDetails };

export type GatewayImageGenCompletedEvent = Omit<ImageGenCompletedEvent, 'usage'> & {
  index: number;
  revised_prompt?: string;
  usage: EventUsage<ImageGenCompletedEvent.Usage>;
};

export type GatewayImageEditCompletedEvent = Omit<ImageEditCompletedEvent, 'usage'> & {
  index: number;
  revised_prompt?: string;
  usage: EventUsage<ImageEditCompletedEvent.Usage>;
};

/** Model entries carry the catalog's description (parameters, edit, max_n, ...: SPEC 1.3). */
export type GatewayModel = Model & { [field: string]: unknown };
export type GatewayModelList = { object: 'list'; data: GatewayModel[] };

export type GatewayErrorBody = { error: ErrorObject };
export type GatewayErrorEvent = { type: 'error'; error: ErrorObject };
