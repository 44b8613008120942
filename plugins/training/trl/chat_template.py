"""The built-in chat template of the trainers (``chat_template = "chatml-tools"``).

:data:`CHATML_TOOL_TEMPLATE` renders tools in the system turn, calls as ``<tool_call>`` JSON and tool results
as ``<tool_response>`` user turns, with the assistant output inside ``{% generation %}`` so TRL can mask the
loss to it. Used when a model's own template cannot render tools (:func:`~.common.resolve_chat_template`).
"""

__all__ = ["CHATML_TOOL_TEMPLATE", "CHATML_COMPACT_TOOL_TEMPLATE", "COMPACT_TOOLS_BLOCK"]

# A ChatML template with tools, in the shape of Qwen2.5's: tools in the system turn, calls as <tool_call> JSON,
# tool results as <tool_response> in user turns, assistant output inside {% generation %} for TRL's masks.
CHATML_TOOL_TEMPLATE = r"""{%- if tools %}<|im_start|>system
{%- if messages[0].role == 'system' %}
{{ messages[0].content }}
{%- endif %}

# Tools
<tools>
{%- for tool in tools %}
{{ tool | tojson }}
{%- endfor %}
</tools>
Call a tool with a tool_call block holding {"name": ..., "arguments": ...}.<|im_end|>
{% elif messages[0].role == 'system' %}<|im_start|>system
{{ messages[0].content }}<|im_end|>
{% endif %}
{%- for message in messages %}
{%- if message.role == 'user' %}<|im_start|>user
{{ message.content }}<|im_end|>
{% elif message.role == 'assistant' %}<|im_start|>assistant
{% generation %}{%- if message.content %}{{ message.content }}{%- endif %}
{%- for call in message.tool_calls or [] %}<tool_call>
{"name": "{{ call.function.name }}", "arguments": {{ call.function.arguments | tojson }}}
</tool_call>{%- endfor %}<|im_end|>{% endgeneration %}
{% elif message.role == 'tool' %}<|im_start|>user
<tool_response>
{{ message.content }}
</tool_response><|im_end|>
{% endif %}
{%- endfor %}
{%- if add_generation_prompt %}<|im_start|>assistant
{% endif %}"""


#: The tools block of :data:`CHATML_COMPACT_TOOL_TEMPLATE`: one line a tool, ``name(arg: type, opt?: type): what
#: it does``, with enumerations kept, instead of each tool's whole JSON schema.
COMPACT_TOOLS_BLOCK = r"""# Tools
{%- for tool in tools %}
{%- set f = tool.function if tool.function is defined else tool %}
{%- set params = f.parameters if f.parameters is defined else {} %}
{%- set req = params.required if params.required is defined else [] %}
{{- '\n- ' + f.name + '(' }}
{%- for name, p in (params.properties if params.properties is defined else {}).items() %}
{{- name }}{% if name not in req %}?{% endif %}{{ ': ' + (p.type if p.type is defined else 'any') }}
{%- if p.enum is defined %}{{ ' in ' + (p.enum | join('|')) }}{% endif %}{% if not loop.last %}{{ ', ' }}{% endif %}
{%- endfor %}
{{- '): ' + f.description }}
{%- endfor %}"""

#: :data:`CHATML_TOOL_TEMPLATE` with the compact tools block (``chat_template = "chatml-tools-compact"``): the
#: same conversation rendering, fewer prompt tokens per example (measured in benchmarks/bench_token_budget.py).
CHATML_COMPACT_TOOL_TEMPLATE = CHATML_TOOL_TEMPLATE.replace(
    """# Tools
<tools>
{%- for tool in tools %}
{{ tool | tojson }}
{%- endfor %}
</tools>""", COMPACT_TOOLS_BLOCK)
assert CHATML_COMPACT_TOOL_TEMPLATE != CHATML_TOOL_TEMPLATE
