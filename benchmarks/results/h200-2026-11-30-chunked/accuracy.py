import torch, actattn
from actattn import reference
torch.manual_seed(0)
dev="cuda"
# padded vs alone vs fp64, causal dq
q,k,v=[torch.randn(2,2,150,64,device=dev,dtype=torch.float64) for _ in range(3)]
kl=torch.tensor([150,83],device=dev)
go=torch.randn(2,2,150,64,device=dev,dtype=torch.float64); go[1,:,83:]=0
def g(q,k,v,go,**kw):
    l=[t.detach().clone().requires_grad_() for t in (q,k,v)]
    o=actattn.linear_attention(*l,causal=True,**kw); o.backward(go.to(o.dtype)); return [t.grad.double() for t in l]
ref=g(q[1:,:,:83],k[1:,:,:83],v[1:,:,:83],go[1:,:,:83])
pad=g(q.bfloat16(),k.bfloat16(),v.bfloat16(),go,key_lengths=kl)
alo=g(q[1:,:,:83].bfloat16(),k[1:,:,:83].bfloat16(),v[1:,:,:83].bfloat16(),go[1:,:,:83])
for i,n in enumerate("qkv"):
    r=ref[i].abs().max().item()
    print("d"+n,"pad err",(pad[i][1:,:,:83]-ref[i]).abs().max().item()/r,"alone err",(alo[i]-ref[i]).abs().max().item()/r, "pad-alone", (pad[i][1:,:,:83]-alo[i]).abs().max().item()/r)
# fp16 dv error vs N and mean
for causal in (False,True):
  for n in (4096,16384,65536):
    for mean in (0.0,4.0):
        q,k,v=[torch.randn(1,1,n,64,device=dev,dtype=torch.float64) for _ in range(3)]; v=v+mean
        go=torch.randn(1,1,n,64,device=dev,dtype=torch.float64)
        l64=[t.clone().requires_grad_() for t in (q,k,v)]
        reference.chunked_linear_attention(*l64,"elu",causal=causal).backward(go)
        for dt in (torch.float16,torch.bfloat16):
            l=[t.to(dt).requires_grad_() for t in (q,k,v)]
            actattn.linear_attention(*l,feature_map="elu",causal=causal).backward(go.to(dt))
            e=[((a.grad.double()-b.grad).abs().max()/b.grad.abs().max()).item() for a,b in zip(l,l64)]
            print("causal",causal,"n",n,"mean",mean,dt,"rel err dq dk dv %.2e %.2e %.2e"%tuple(e))
