"""Hugging Face Transformers: sentence-transformers embeddings and text generation.

PyTorch and Transformers are large (several GB) and slow to import, so they are an optional part
of the worker's environment (`requirements-transformers.txt`): without them these calls answer
FAILED_PRECONDITION, and the rest of the worker serves as usual. They are imported on first use,
never at start-up, so the worker is SERVING in about a second either way."""

import threading

from .errors import InvalidInput, NotInstalled, WorkerError
from .files import FileProvider
from .protocol import pb

MAX_TEXTS = 2048


def _require():
    try:
        import sentence_transformers  # noqa: F401
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError as err:
        raise NotInstalled(
            f"Transformers is not installed in the worker's environment ({err.name} is missing)"
        ) from None


class Embedder:
    def __init__(self, model):
        self._model = model
        self._lock = threading.Lock()

    def embed(self, request: "pb.EmbedRequest") -> "pb.EmbedReply":
        texts = list(request.texts)
        if not texts:
            raise InvalidInput("no texts to embed")
        if len(texts) > MAX_TEXTS:
            raise InvalidInput(f"at most {MAX_TEXTS} texts a request")
        limit = self._model.max_seq_length
        with self._lock:
            lengths = [len(self._model.tokenizer(t)["input_ids"]) for t in texts]
            if request.refuse_over_long:
                for at, length in enumerate(lengths):
                    if limit and length > limit:
                        raise InvalidInput(
                            f"input[{at}] is {length} tokens, over the model's {limit}"
                        )
            vectors = self._model.encode(texts, normalize_embeddings=request.normalize)
        # What was embedded: sentence-transformers cuts each text to the model's limit.
        tokens = sum(min(length, limit) if limit else length for length in lengths)
        return pb.EmbedReply(
            vectors=[pb.Vector(values=v.tolist()) for v in vectors], prompt_tokens=tokens
        )


def load_embedder(files: FileProvider, model_id: str) -> Embedder:
    _require()
    from sentence_transformers import SentenceTransformer

    with files.directory(model_id) as directory:
        model = SentenceTransformer(str(directory), device="cpu", local_files_only=True)
    return Embedder(model)


class Generator:
    def __init__(self, model, tokenizer):
        self._model = model
        self._tokenizer = tokenizer
        self._lock = threading.Lock()

    def generate(self, request: "pb.GenerateRequest", cancelled: threading.Event):
        """Streams the answer; generation ends early once `cancelled` is set (the caller left or
        stopped reading at a stop string)."""
        import torch
        from transformers import StoppingCriteriaList, TextIteratorStreamer

        if request.messages:
            if not getattr(self._tokenizer, "chat_template", None):
                raise InvalidInput("this model has no chat template: send a prompt instead")
            prompt = self._tokenizer.apply_chat_template(
                [{"role": t.role, "content": t.content} for t in request.messages],
                tokenize=False,
                add_generation_prompt=True,
            )
        elif request.prompt:
            prompt = request.prompt
        else:
            raise InvalidInput("messages or a prompt is required")
        inputs = self._tokenizer(prompt, return_tensors="pt")
        max_tokens = request.max_tokens or 256
        sampling = request.temperature > 0
        if request.HasField("seed"):
            torch.manual_seed(request.seed)
        streamer = TextIteratorStreamer(self._tokenizer, skip_prompt=True, skip_special_tokens=True)
        settings = dict(
            **inputs,
            max_new_tokens=max_tokens,
            do_sample=sampling,
            streamer=streamer,
            stopping_criteria=StoppingCriteriaList([_stop_when(cancelled)]),
        )
        if request.stop:
            settings.update(stop_strings=list(request.stop), tokenizer=self._tokenizer)
        if sampling:
            settings.update(temperature=request.temperature, top_p=request.top_p or 1.0)
        produced = {}

        def run():
            try:
                with self._lock:
                    produced["ids"] = self._model.generate(**settings)
            except Exception as err:  # reported below; the streamer must still end
                produced["error"] = err
                streamer.end()

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        for text in streamer:
            if text:
                yield pb.GenerateChunk(text=text)
        thread.join()
        if "error" in produced:
            raise WorkerError(f"generation failed: {produced['error']}")
        prompt_tokens = int(inputs["input_ids"].shape[1])
        completion = int(produced["ids"].shape[1]) - prompt_tokens if "ids" in produced else 0
        yield pb.GenerateChunk(
            finish_reason="length" if completion >= max_tokens else "stop",
            prompt_tokens=prompt_tokens,
            completion_tokens=completion,
        )


def _stop_when(event: threading.Event):
    """A stopping criterion that ends generation once `event` is set."""
    from transformers import StoppingCriteria

    class Cancelled(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            return event.is_set()

    return Cancelled()


def load_generator(files: FileProvider, model_id: str) -> Generator:
    _require()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with files.directory(model_id) as directory:
        tokenizer = AutoTokenizer.from_pretrained(str(directory), local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(str(directory), local_files_only=True)
    model.eval()
    return Generator(model, tokenizer)
