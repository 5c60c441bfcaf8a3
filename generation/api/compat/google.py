"""Google-compatible endpoints: Imagen `:predict` and Gemini `:generateContent`, synchronous, in
Google's request, response and error shapes. The key comes from `x-goog-api-key` (or Bearer).

Paths (what google-genai sends with `vertexai=True, api_key=…, http_options=HttpOptions(base_url=…,
api_version=…)`, and with plain `api_key=…` for generateContent):

    POST /v1beta/models/{model}:predict
    POST /{v1|v1beta1}/publishers/google/models/{model}:predict
    POST /{v1|v1beta}/models/{model}:generateContent
    POST /{v1|v1beta1}/publishers/google/models/{model}:generateContent

`{model}` is a tier or alias (`imagen-4-fast`, `fast`, …) or a concrete model id. Enum values are
case-insensitive (the SDK sends upper case). A field we cannot honour is a 400 naming it, never
dropped. Fields with no effect on an image (sampling knobs such as `temperature`, `thinkingConfig`:
the tier decides how the model thinks) are accepted and documented here as having none.
"""

from __future__ import annotations

from drf_spectacular.utils import extend_schema

from tenants.errors import ImagegateError, InvalidRequest

from .base import CompatAPIView, image_base64, image_json_response
from .errors import render_google_error

SAFETY_SETTINGS = {
    "block_low_and_above": "block_low_and_above",
    "block_medium_and_above": "block_medium_and_above",
    "block_only_high": "block_only_high",
    "block_none": "block_none",
    "off": "block_none",
    # Older Imagen names
    "block_most": "block_low_and_above",
    "block_some": "block_medium_and_above",
    "block_few": "block_only_high",
    "block_fewest": "block_none",
}
_SAFETY_ORDER = ["block_low_and_above", "block_medium_and_above", "block_only_high", "block_none"]
PERSON_GENERATION = {
    "dont_allow": "dont_allow",
    "allow_none": "dont_allow",
    "allow_adult": "allow_adult",
    "allow_all": "allow_all",
}
MIME_FORMATS = {"image/png": "png", "image/jpeg": "jpeg", "image/webp": "webp"}

PREDICT_PARAMETERS = {
    "sampleCount",
    "aspectRatio",
    "sampleImageSize",
    "outputOptions",
    "includeRaiReason",
    "includeSafetyAttributes",
    "personGeneration",
    "safetySetting",
    "seed",
    "negativePrompt",
    "addWatermark",
    "enhancePrompt",
}
# Accepted, no effect on the image: sampling knobs; the tier decides how the model thinks.
GENERATION_CONFIG_NO_EFFECT = {
    "temperature",
    "topP",
    "topK",
    "maxOutputTokens",
    "thinkingConfig",
    "presencePenalty",
    "frequencyPenalty",
}
GENERATION_CONFIG_FIELDS = {"responseModalities", "imageConfig", "candidateCount", "seed"}
IMAGE_CONFIG_FIELDS = {"aspectRatio", "imageSize", "personGeneration", "imageOutputOptions"}
GENERATE_CONTENT_FIELDS = {"contents", "generationConfig", "safetySettings", "labels"}
PART_FIELDS = {"text", "inlineData", "fileData", "thought", "thoughtSignature", "mediaResolution"}

# Our parameter names -> Google's, for errors raised by validation and routing.
PREDICT_NAMES = {
    "prompt": "instances[0].prompt",
    "count": "parameters.sampleCount",
    "aspect_ratio": "parameters.aspectRatio",
    "resolution": "parameters.sampleImageSize",
    "output_format": "parameters.outputOptions.mimeType",
    "compression_quality": "parameters.outputOptions.compressionQuality",
    "seed": "parameters.seed",
    "negative_prompt": "parameters.negativePrompt",
    "safety_level": "parameters.safetySetting",
    "person_generation": "parameters.personGeneration",
    "metadata": "labels",
}
GENERATE_CONTENT_NAMES = {
    "prompt": "contents",
    "images": "contents",
    "mask": "contents",
    "aspect_ratio": "generationConfig.imageConfig.aspectRatio",
    "resolution": "generationConfig.imageConfig.imageSize",
    "output_format": "generationConfig.imageConfig.imageOutputOptions.mimeType",
    "compression_quality": "generationConfig.imageConfig.imageOutputOptions.compressionQuality",
    "seed": "generationConfig.seed",
    "safety_level": "safetySettings",
    "person_generation": "generationConfig.imageConfig.personGeneration",
    "metadata": "labels",
}


def _object(value, name: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidRequest(f"Invalid value at '{name}': expected an object.", param=name)
    return value


def _array(value, name: str) -> list:
    if value is None:
        return []
    if not isinstance(value, list):
        raise InvalidRequest(f"Invalid value at '{name}': expected a list.", param=name)
    return value


def _refuse_unknown(data: dict, known: set[str], prefix: str) -> None:
    unknown = sorted(set(data) - known)
    if unknown:
        name = f"{prefix}{unknown[0]}"
        raise InvalidRequest(
            f"Invalid JSON payload received. Unknown name \"{unknown[0]}\" at '{name}'.", param=name
        )


def _enum(value, table: dict[str, str], name: str) -> str:
    normalized = table.get(str(value).strip().lower()) if isinstance(value, str) else None
    if normalized is None:
        raise InvalidRequest(
            f"Invalid value at '{name}' ({value!r}); expected one of {', '.join(k.upper() for k in table)}.",
            param=name,
        )
    return normalized


def _bool(value, name: str) -> bool:
    if value is None:
        return False
    if not isinstance(value, bool):
        raise InvalidRequest(f"Invalid value at '{name}': expected true or false.", param=name)
    return value


def _output_options(options: dict, name: str, native: dict) -> None:
    _refuse_unknown(options, {"mimeType", "compressionQuality"}, f"{name}.")
    if options.get("mimeType") is not None:
        native["output_format"] = _enum(options["mimeType"], MIME_FORMATS, f"{name}.mimeType")
    if options.get("compressionQuality") is not None:
        native["compression_quality"] = options["compressionQuality"]


def _labels(value) -> dict:
    labels = _object(value, "labels")
    return {str(k): str(v) for k, v in labels.items()}


def predict_native_request(body) -> tuple[dict, dict]:
    """An Imagen `:predict` body -> (native request data, response options)."""
    body = _object(body, "body")
    _refuse_unknown(body, {"instances", "parameters", "labels"}, "")
    instances = body.get("instances")
    if not isinstance(instances, list) or len(instances) != 1 or not isinstance(instances[0], dict):
        raise InvalidRequest(
            "'instances' must be a list with exactly one {\"prompt\": ...}.", param="instances"
        )
    _refuse_unknown(instances[0], {"prompt"}, "instances[0].")
    prompt = instances[0].get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise InvalidRequest("instances[0].prompt is required.", param="instances[0].prompt")
    parameters = _object(body.get("parameters"), "parameters")
    _refuse_unknown(parameters, PREDICT_PARAMETERS, "parameters.")

    # Google's default sampleCount for Imagen is 4.
    native: dict = {"prompt": prompt, "count": parameters.get("sampleCount", 4)}
    if parameters.get("aspectRatio") is not None:
        native["aspect_ratio"] = parameters["aspectRatio"]
    if parameters.get("sampleImageSize") is not None:
        native["resolution"] = parameters["sampleImageSize"]
    _output_options(
        _object(parameters.get("outputOptions"), "parameters.outputOptions"),
        "parameters.outputOptions",
        native,
    )
    if parameters.get("personGeneration") is not None:
        native["person_generation"] = _enum(
            parameters["personGeneration"], PERSON_GENERATION, "parameters.personGeneration"
        )
    if parameters.get("safetySetting") is not None:
        native["safety_level"] = _enum(
            parameters["safetySetting"], SAFETY_SETTINGS, "parameters.safetySetting"
        )
    if parameters.get("seed") is not None:
        native["seed"] = parameters["seed"]
    if parameters.get("negativePrompt") is not None:
        native["negative_prompt"] = parameters["negativePrompt"]
    # We never add a watermark, so addWatermark=false is honoured and true cannot be.
    if _bool(parameters.get("addWatermark"), "parameters.addWatermark"):
        raise InvalidRequest(
            "parameters.addWatermark=true is not supported.", param="parameters.addWatermark"
        )
    if _bool(parameters.get("enhancePrompt"), "parameters.enhancePrompt"):
        raise InvalidRequest(
            "parameters.enhancePrompt=true is not supported.", param="parameters.enhancePrompt"
        )
    if body.get("labels"):
        native["metadata"] = _labels(body["labels"])
    options = {
        "include_rai_reason": _bool(parameters.get("includeRaiReason"), "parameters.includeRaiReason"),
        "include_safety_attributes": _bool(
            parameters.get("includeSafetyAttributes"), "parameters.includeSafetyAttributes"
        ),
    }
    return native, options


def _camel(data: dict) -> dict:
    """Google's JSON accepts proto field names in snake_case too (google-genai sends
    `inlineData.mime_type`); read both spellings as the camelCase one."""

    def name(key: str) -> str:
        head, *rest = key.split("_")
        return head + "".join(word.title() for word in rest)

    return {name(key): value for key, value in data.items()}


def _image_part(part: dict, where: str) -> str | None:
    """An image part as a native input spec: `inlineData` → its base64 data; `fileData` → our
    file id (`file_…`, alone or at the end of a URI such as `…/v1/files/file_…`) or an https
    URL (fetched like any input URL). None when the part carries neither."""
    inline = part.get("inlineData")
    if inline is not None:
        inline = _camel(_object(inline, f"{where}.inlineData"))
        _refuse_unknown(inline, {"mimeType", "data", "displayName"}, f"{where}.inlineData.")
        data = inline.get("data")
        if not isinstance(data, str) or not data:
            raise InvalidRequest(
                f"{where}.inlineData.data must be base64 image data.", param=f"{where}.inlineData"
            )
        return data
    file_data = part.get("fileData")
    if file_data is not None:
        file_data = _camel(_object(file_data, f"{where}.fileData"))
        _refuse_unknown(file_data, {"mimeType", "fileUri", "displayName"}, f"{where}.fileData.")
        uri = file_data.get("fileUri")
        if not isinstance(uri, str) or not uri:
            raise InvalidRequest(f"{where}.fileData.fileUri is required.", param=f"{where}.fileData")
        tail = uri.rstrip("/").rsplit("/", 1)[-1]
        return tail if tail.startswith("file_") else uri
    return None


def generate_content_native_request(body) -> dict:
    """A Gemini `:generateContent` body -> native request data. Text parts of user turns are the
    prompt; image parts of every turn (inlineData, fileData) are the input images, in order;
    `_locations` says where each came from, for error messages."""
    body = _object(body, "body")
    if "systemInstruction" in body or "tools" in body or "toolConfig" in body or "cachedContent" in body:
        name = next(k for k in ("systemInstruction", "tools", "toolConfig", "cachedContent") if k in body)
        raise InvalidRequest(
            f"'{name}' is not supported: this endpoint generates images from text.", param=name
        )
    _refuse_unknown(body, GENERATE_CONTENT_FIELDS, "")
    contents = body.get("contents")
    if isinstance(contents, dict):
        contents = [contents]
    if not isinstance(contents, list) or not contents:
        raise InvalidRequest("'contents' must be a non-empty list.", param="contents")
    texts, images, locations = [], [], []
    for index, content in enumerate(contents):
        content = _object(content, f"contents[{index}]")
        role = content.get("role", "user")
        if role not in ("user", "model"):
            raise InvalidRequest(
                f"contents[{index}].role must be user or model.", param=f"contents[{index}].role"
            )
        for part_index, part in enumerate(_array(content.get("parts"), f"contents[{index}].parts")):
            where = f"contents[{index}].parts[{part_index}]"
            part = _camel(_object(part, where))
            _refuse_unknown(part, PART_FIELDS, f"{where}.")
            if part.get("thought"):
                continue  # interim thoughts of an earlier model turn: not part of the conversation
            if "text" in part:
                if role == "user":  # earlier model turns' words carry no instructions
                    texts.append(str(part["text"]))
                continue
            spec = _image_part(part, where)
            if spec is None:
                raise InvalidRequest(f"{where} has no text, inlineData or fileData.", param=where)
            # Images of earlier model turns are inputs too: conversational editing.
            images.append(spec)
            locations.append(where)
    prompt = "\n".join(t for t in texts if t.strip())
    if not prompt:
        raise InvalidRequest("contents has no text to generate an image from.", param="contents")

    config = _object(body.get("generationConfig"), "generationConfig")
    _refuse_unknown(config, GENERATION_CONFIG_FIELDS | GENERATION_CONFIG_NO_EFFECT, "generationConfig.")
    # Google's default for image models is TEXT and IMAGE; we answer the image part only.
    modalities = config.get("responseModalities")
    if modalities is not None and (
        not isinstance(modalities, list) or "IMAGE" not in [str(m).upper() for m in modalities]
    ):
        raise InvalidRequest(
            "generationConfig.responseModalities must include IMAGE: this endpoint serves image output only.",
            param="generationConfig.responseModalities",
        )
    if config.get("candidateCount") not in (None, 1):
        raise InvalidRequest(
            "Multiple candidates is not enabled for this model; send one request per image.",
            param="generationConfig.candidateCount",
        )
    native: dict = {"prompt": prompt, "count": 1}
    if images:
        native["images"] = images
        native["_locations"] = locations
    if config.get("seed") is not None:
        native["seed"] = config["seed"]
    image_config = _object(config.get("imageConfig"), "generationConfig.imageConfig")
    _refuse_unknown(image_config, IMAGE_CONFIG_FIELDS, "generationConfig.imageConfig.")
    if image_config.get("aspectRatio") is not None:
        native["aspect_ratio"] = image_config["aspectRatio"]
    if image_config.get("imageSize") is not None:
        native["resolution"] = image_config["imageSize"]
    if image_config.get("personGeneration") is not None:
        native["person_generation"] = _enum(
            image_config["personGeneration"],
            PERSON_GENERATION,
            "generationConfig.imageConfig.personGeneration",
        )
    name = "generationConfig.imageConfig.imageOutputOptions"
    _output_options(_object(image_config.get("imageOutputOptions"), name), name, native)

    thresholds = []
    settings_list = body.get("safetySettings") or []
    if not isinstance(settings_list, list):
        raise InvalidRequest("'safetySettings' must be a list.", param="safetySettings")
    for index, setting in enumerate(settings_list):
        setting = _object(setting, f"safetySettings[{index}]")
        threshold = setting.get("threshold")
        if threshold is None or str(threshold).upper() == "HARM_BLOCK_THRESHOLD_UNSPECIFIED":
            continue
        thresholds.append(_enum(threshold, SAFETY_SETTINGS, f"safetySettings[{index}].threshold"))
    if thresholds:  # one safety level per request: the strictest one asked for
        native["safety_level"] = min(thresholds, key=_SAFETY_ORDER.index)
    if body.get("labels"):
        native["metadata"] = _labels(body["labels"])
    return native


def predictions(document: dict, *, include_rai_reason: bool, include_safety_attributes: bool) -> dict:
    """The `:predict` answer exactly as Google shapes it: a filtered image is a
    `{"raiFilteredReason"}` element when asked for, else left out; all filtered and not asked → {}."""
    items: list[dict] = []
    for image in document["images"]:
        if image["filtered"]:
            if include_rai_reason:
                items.append(
                    {"raiFilteredReason": image["filter_reason"] or "Filtered by the safety filter."}
                )
            continue
        item = {"bytesBase64Encoded": image_base64(image), "mimeType": image["mime_type"]}
        if include_safety_attributes:
            item["safetyAttributes"] = {"categories": [], "scores": []}
        items.append(item)
    if include_safety_attributes and items:
        items.append({"contentType": "Positive Prompt", "safetyAttributes": {"categories": [], "scores": []}})
    return {"predictions": items} if items else {}


def generate_content_response(document: dict) -> dict:
    """One candidate with the image as inlineData, or (filtered) finishReason IMAGE_SAFETY in a 200,
    as Gemini reports safety blocks. Token counts are zero: we sell per image, not per token."""
    image = document["images"][0]
    if image["filtered"]:
        candidate = {
            "content": {"role": "model", "parts": []},
            "finishReason": "IMAGE_SAFETY",
            "finishMessage": image["filter_reason"] or "The image was blocked by the safety filter.",
            "index": 0,
        }
    else:
        candidate = {
            "content": {
                "role": "model",
                "parts": [{"inlineData": {"mimeType": image["mime_type"], "data": image_base64(image)}}],
            },
            "finishReason": "STOP",
            "index": 0,
        }
    return {
        "candidates": [candidate],
        "usageMetadata": {"promptTokenCount": 0, "candidatesTokenCount": 0, "totalTokenCount": 0},
        "modelVersion": document["model"],
        "responseId": document["id"],
    }


class GoogleAPIView(CompatAPIView):
    render_error = staticmethod(render_google_error)


class PredictView(GoogleAPIView):
    """Imagen-compatible `:predict`."""

    param_names = PREDICT_NAMES

    # Excluded from our OpenAPI document on purpose: the contract is Google's published Imagen API,
    # which the official SDKs implement; duplicating it here would only drift.
    @extend_schema(exclude=True)
    def post(self, request, model: str, version: str = "v1beta"):
        native, options = predict_native_request(request.data)
        document = self.generate(self.native_request({**native, "model": model}))
        return image_json_response(
            predictions(document, **options), headers={"x-imagegate-generation-id": document["id"]}
        )


class GenerateContentView(GoogleAPIView):
    """Gemini-compatible `:generateContent` for image output."""

    param_names = GENERATE_CONTENT_NAMES

    images_param = "inputs"

    @extend_schema(exclude=True)  # Google's published Gemini API is the contract (see PredictView)
    def post(self, request, model: str, version: str = "v1"):
        native = generate_content_native_request(request.data)
        locations = native.pop("_locations", [])
        try:
            document = self.generate(self.native_request({**native, "model": model}))
        except ImagegateError as error:
            # inputs[i] (and the catalog's "images") -> the part the client sent it in.
            if error.param and error.param.startswith("inputs[") and locations:
                index = int(error.param[7:].split("]", 1)[0])
                error.param = locations[index] if index < len(locations) else "contents"
                error.message = error.message.replace(f"inputs[{index}]", error.param)
            elif error.param in ("images", "inputs"):
                error.param = "contents"
            raise
        return image_json_response(
            generate_content_response(document), headers={"x-imagegate-generation-id": document["id"]}
        )
