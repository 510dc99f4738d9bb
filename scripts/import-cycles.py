#!/usr/bin/env python3
# `make lint`: no import circles among host/src's top-level modules. Each module's
# `crate::X` references (comments and unit-test modules aside) are its edges; a strongly
# connected component of more than one module is a circle, printed with the files that
# close it, and fails the check.
import re,glob,os,sys,collections
os.chdir(os.path.join(os.path.dirname(os.path.abspath(__file__)), '..'))
root='host/src'
edges=collections.defaultdict(set)
where=collections.defaultdict(list)
for f in glob.glob(root+'/**/*.rs',recursive=True):
    rel=os.path.relpath(f,root)
    if rel in ('lib.rs','main.rs'): continue
    top=rel.split('/')[0].replace('.rs','')
    text=open(f).read()
    # drop test modules
    text=re.split(r'#\[cfg\(test\)\]\s*mod tests',text)[0]
    text='\n'.join(l for l in text.split('\n') if not l.strip().startswith('//'))
    if rel.endswith('tests.rs'): continue
    for m in re.finditer(r'crate::([a-z_]+)',text):
        n=m.group(1)
        if n!=top and n not in ('install_tls_provider',):
            edges[top].add(n); where[(top,n)].append(rel)
# tarjan
idx={};low={};st=[];on=set();sccs=[];c=[0]
def sc(v):
    idx[v]=low[v]=c[0];c[0]+=1;st.append(v);on.add(v)
    for w in edges.get(v,()):
        if w not in idx: sc(w);low[v]=min(low[v],low[w])
        elif w in on: low[v]=min(low[v],idx[w])
    if low[v]==idx[v]:
        comp=[]
        while True:
            w=st.pop();on.discard(w);comp.append(w)
            if w==v:break
        sccs.append(comp)
sys.setrecursionlimit(10000)
for v in list(edges): 
    if v not in idx: sc(v)
cyc=[s for s in sccs if len(s)>1]
for s in cyc:
    print('cycle:',sorted(s))
    for a in s:
        for b in edges[a]:
            if b in s: print('  ',a,'->',b,'in',sorted(set(where[(a,b)]))[:4])
if not cyc: print('import-cycles: no circle among',len(edges),'modules')
else: sys.exit(1)
