"""The servable form of a draft: the plan, the checks against SGLang's loader and the target, the sealed write."""
