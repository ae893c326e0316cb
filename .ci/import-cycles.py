"""No import circle between the files of a crate.

For each crate, an edge runs from one file to another when its code names
the other's module (a `crate::`, `super::` or `self::` path, or a `use` of a
child module). A module's use of its own ancestors (`super::*`, a type
defined in `lib.rs`) is the module tree itself, not an edge; a circle is
therefore between files none of which contains the other, as the guard's
`check.rs` and `rewrite.rs` once were. Exits 1 and lists each circle.
"""
import os,re,sys
root=os.path.join(os.path.dirname(os.path.abspath(__file__)),'..','crates')
def modfile(crate_src, parts):
    # parts: module path from crate root
    base=os.path.join(crate_src,*parts) if parts else None
    if not parts: 
        for n in ('lib.rs','main.rs'):
            if os.path.exists(os.path.join(crate_src,n)): return os.path.join(crate_src,n)
    for cand in (base+'.rs', os.path.join(base,'mod.rs')):
        if os.path.exists(cand): return cand
    return None
def modpath(crate_src, f):
    rel=os.path.relpath(f,crate_src)[:-3].split(os.sep)
    if rel[-1] in ('mod','lib','main'): rel=rel[:-1]
    return rel
cycles=0
def is_ancestor(t,f):
    # t's module is an ancestor of f's module (lib.rs, or a mod.rs above f)
    tdir=os.path.dirname(t)
    if os.path.basename(t) in ('lib.rs','main.rs','mod.rs'):
        return os.path.dirname(f).startswith(tdir) and t!=f
    return False
for crate in sorted(os.listdir(root)):
    src=os.path.join(root,crate,'src')
    if not os.path.isdir(src): continue
    files=[os.path.join(d,f) for d,_,fs in os.walk(src) for f in fs if f.endswith('.rs')]
    g={f:set() for f in files}
    for f in files:
        mp=modpath(src,f)
        text=open(f).read()
        text=re.sub(r'#\[cfg\(test\)\]\s*mod tests\s*\{.*','',text,flags=re.S)  # drop inline tests
        for m in re.finditer(r'\b(crate|super|self)((?:::[A-Za-z_][A-Za-z0-9_]*)*)(::\*|::\{)?',text):
            head=m.group(1); rest=[p for p in m.group(2).split('::') if p]
            if head=='crate': base=[]
            elif head=='super': base=mp[:-1]
            else: base=mp
            # longest prefix that is a module file
            path=base+rest
            target=None
            for k in range(len(path),-1,-1):
                t=modfile(src,path[:k])
                if t: target=t; break
            if target and target!=f and not is_ancestor(target,f): g[f].add(target)
        for m in re.finditer(r'^\s*(?:pub(?:\([a-z]+\))?\s+)?use\s+([a-z_][a-z0-9_]*)::',text,re.M):
            name=m.group(1)
            t=modfile(src,mp+[name])
            if t and t!=f: g[f].add(t)
    # find cycles (Tarjan)
    idx={};low={};st=[];on=set();n=[0];sccs=[]
    def sc(v):
        idx[v]=low[v]=n[0];n[0]+=1;st.append(v);on.add(v)
        for w in g[v]:
            if w not in idx: sc(w);low[v]=min(low[v],low[w])
            elif w in on: low[v]=min(low[v],idx[w])
        if low[v]==idx[v]:
            comp=[]
            while True:
                w=st.pop();on.discard(w);comp.append(w)
                if w==v:break
            if len(comp)>1: sccs.append(comp)
    sys.setrecursionlimit(10000)
    for v in g:
        if v not in idx: sc(v)
    for c in sccs:
        cycles+=1
        print(crate, [os.path.relpath(x,src) for x in c])
print("import circles between files:",cycles)
sys.exit(1 if cycles else 0)
