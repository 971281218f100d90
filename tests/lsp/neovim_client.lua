-- Driven by test_neovim.py: `nvim --headless -u NONE -i NONE -c 'luafile neovim_client.lua'`.
-- Reads its settings from $ZHIYIN_NVIM_TEST (JSON), asks our server for completions through
-- Neovim's own LSP client and writes what came back, as JSON, to the `out` file; then quits.
local config = vim.json.decode(os.getenv('ZHIYIN_NVIM_TEST'))
local report = { nvim = tostring(vim.version()) }

local function run()
  vim.cmd.edit(vim.fn.fnameescape(config.file))
  local buf = vim.api.nvim_get_current_buf()
  -- the user goes on writing: a new function, the cursor after the last character typed
  vim.api.nvim_buf_set_lines(buf, -1, -1, false, config.append)
  vim.o.virtualedit = 'onemore' -- as in insert mode, the cursor may sit past the last character
  local last = vim.api.nvim_buf_line_count(buf)
  local line = vim.api.nvim_buf_get_lines(buf, last - 1, last, false)[1]
  vim.api.nvim_win_set_cursor(0, { last, #line })

  local client_id = assert(vim.lsp.start({
    name = 'zhiyin',
    cmd = config.cmd,
    root_dir = config.root,
    init_options = { embeddings = false },
    detached = false, -- in nvim's process group: the test kills both if they hang
  }))
  local client = assert(vim.lsp.get_client_by_id(client_id))
  vim.wait(30000, function() return client.initialized or client:is_stopped() end, 50)
  assert(client.initialized, 'the server did not initialize')
  report.client = { name = client.name, offset_encoding = client.offset_encoding }

  local function request(method, params)
    local results, err = vim.lsp.buf_request_sync(buf, method, params, 120000)
    local answer = results and results[client_id] or {}
    return { error = err or answer.err, result = answer.result }
  end

  local position = vim.lsp.util.make_position_params(0, client.offset_encoding)
  report.position = position.position
  report.line = line
  report.completion = request('textDocument/completion', position)
  report.inline = request('textDocument/inlineCompletion', vim.tbl_extend('force', position, {
    context = { triggerKind = 1 }, -- invoked
  }))

  -- accept the completion the way Neovim applies an edit: the line must read on from what was typed
  local items = vim.tbl_get(report.completion, 'result', 'items') or {}
  if items[1] and items[1].textEdit then
    vim.lsp.util.apply_text_edits({ items[1].textEdit }, buf, client.offset_encoding)
    report.accepted = vim.api.nvim_buf_get_lines(buf, last - 1, last, false)[1]
  end
  vim.lsp.stop_client(client_id)
  vim.wait(5000, function() return client:is_stopped() end, 50)
end

local ok, err = xpcall(run, debug.traceback)
if not ok then
  report.failure = err
end
local out = assert(io.open(config.out, 'w'))
out:write(vim.json.encode(report))
out:close()
vim.cmd('qa!')
